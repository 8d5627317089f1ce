import Link from 'next/link';

// For the snippet's impression test: a search result and two feed items in view, two far below the fold.
const TOP = ['a1', 'b2'];
const SPACER = { height: '4000px' };

export default function Feed() {
  return (
    <main>
      <h1 id="title">Feed items</h1>
      <section data-trackside-view="search">
        <p id="item-s5" data-trackside-item="artwork:s5">Search result s5</p>
      </section>
      <ul data-trackside-view="listing">
        {TOP.map((sqid) => (
          <li key={sqid} id={'item-' + sqid} data-trackside-item={'artwork:' + sqid} style={{ height: '120px' }}>
            <Link href={'/p/' + sqid}>Artwork {sqid}</Link>
          </li>
        ))}
        <li style={SPACER} />
        <li id="item-c3" data-trackside-item="artwork:c3" style={{ height: '120px' }}>Artwork c3</li>
        <li style={SPACER} />
        <li id="item-d4" data-trackside-item="artwork:d4" style={{ height: '120px' }}>Artwork d4</li>
      </ul>
    </main>
  );
}
