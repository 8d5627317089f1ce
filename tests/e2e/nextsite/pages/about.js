import Link from 'next/link';

// Static (no data fetching): once its chunk is prefetched, a client navigation here makes no request.
export default function About() {
  return (
    <main>
      <h1 id="title">About</h1>
      <Link href="/" id="link-home">Home</Link>
    </main>
  );
}
