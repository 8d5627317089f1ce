import Link from 'next/link';
import { useEffect, useState } from 'react';

export default function Artwork({ sqid }) {
  const [api, setApi] = useState(null);

  useEffect(() => {
    let cancelled = false;
    setApi(null);
    const token = window.localStorage.getItem('access_token');
    fetch('/api/p/' + sqid, { headers: token ? { Authorization: 'Bearer ' + token } : {} })
      .then((r) => (r.ok ? r.json() : { error: r.status }))
      .catch((e) => ({ error: String(e) }))
      .then((body) => {
        if (!cancelled) setApi(body);
      });
    return () => {
      cancelled = true;
    };
  }, [sqid]);

  const other = sqid === 'a1' ? 'b2' : 'a1';
  return (
    <main>
      <h1 id="title">Artwork {sqid}</h1>
      <p id="api-status">{api ? (api.error ? 'api error ' + api.error : 'api ok: ' + api.title) : 'loading'}</p>
      <Link href="/" id="link-home">Home</Link>{' '}
      <Link href={'/p/' + other} id={'link-' + other}>Artwork {other}</Link>
    </main>
  );
}

export async function getServerSideProps({ params }) {
  return { props: { sqid: String(params.sqid) } };
}
