import { useRouter } from 'next/router';
import { useEffect, useState } from 'react';

// Static page: stores ?token=... into localStorage.access_token (what the real frontend does after sign-in).
export default function Login() {
  const router = useRouter();
  const [state, setState] = useState('waiting');

  useEffect(() => {
    if (!router.isReady) return;
    const token = router.query.token;
    if (typeof token === 'string' && token) {
      window.localStorage.setItem('access_token', token);
      setState('stored');
    } else {
      window.localStorage.removeItem('access_token');
      setState('cleared');
    }
  }, [router.isReady, router.query.token]);

  return (
    <main>
      <h1 id="title">Login</h1>
      <p id="login-state">{state}</p>
    </main>
  );
}
