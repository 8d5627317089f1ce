import Link from 'next/link';

export default function BlogPost({ sqid, body }) {
  return (
    <main>
      <h1 id="title">Blog {sqid}</h1>
      <p>{body}</p>
      <Link href="/" id="link-home">Home</Link>
    </main>
  );
}

export async function getServerSideProps({ params }) {
  const sqid = String(params.sqid);
  return { props: { sqid, body: 'Post ' + sqid + ' body.' } };
}
