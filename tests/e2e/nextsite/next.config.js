/** @type {import('next').NextConfig} */
// No rewrites, no middleware: the sidecar (not Next) routes /api/* to the Python API.
module.exports = {
  reactStrictMode: true,
  poweredByHeader: false,
};
