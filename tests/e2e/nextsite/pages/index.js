import Link from 'next/link';

const FEED = [
  { href: '/p/a1', label: 'Artwork a1', id: 'link-a1' },
  { href: '/p/b2', label: 'Artwork b2', id: 'link-b2' },
  { href: '/b/post1', label: 'Blog post1', id: 'link-post1' },
  { href: '/about', label: 'About', id: 'link-about' },
];

export default function Home({ feed, renderedAt, origin }) {
  return (
    <main>
      <h1 id="title">Feed</h1>
      <p>rendered at {renderedAt}</p>
      <p>public origin: <span id="origin">{origin}</span></p>
      <ul>
        {feed.map((item) => (
          <li key={item.href}>
            <Link href={item.href} id={item.id}>{item.label}</Link>
          </li>
        ))}
      </ul>
    </main>
  );
}

export async function getServerSideProps({ req }) {
  // The public origin as Next sees it: the sidecar in front sets X-Forwarded-Host/Proto.
  const host = req.headers['x-forwarded-host'] || req.headers.host || '';
  const proto = req.headers['x-forwarded-proto'] || 'http';
  return { props: { feed: FEED, renderedAt: new Date().toISOString(), origin: proto + '://' + host } };
}
