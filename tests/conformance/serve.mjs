// Origin server of the http-cache-tests suite, bound to loopback only.
//
// The package's own server/server.mjs listens on every interface and
// serves any file under its working directory. This wrapper reuses only
// the package's request handlers for the three paths the suite needs
// (/config/<uuid>, /test/<uuid>, /state/<uuid>), answers 404 to anything
// else, and listens on 127.0.0.1 (or another loopback address given in
// CONFORMANCE_ORIGIN_HOST). The port comes from CONFORMANCE_ORIGIN_PORT;
// 0, the default, asks the kernel for a free one. Once listening it
// prints one line, "listening <host> <port>", which the harness reads.
// CONFORMANCE_ORIGIN_KEEPALIVE_MS overrides Node's idle keep-alive
// timeout (5 s, as short as Apache httpd's): a diagnostic knob to tell
// a cache's stale-pooled-connection faults from others; the gate keeps
// the default, since real origins close idle connections that soon.

import http from 'http'
import process from 'process'

import handleConfig from 'http-cache-tests/server/handle-config.mjs'
import handleState from 'http-cache-tests/server/handle-state.mjs'
import handleTest from 'http-cache-tests/server/handle-test.mjs'

const handlers = new Map([
  ['config', handleConfig],
  ['state', handleState],
  ['test', handleTest]
])

const host = process.env.CONFORMANCE_ORIGIN_HOST || '127.0.0.1'
const port = parseInt(process.env.CONFORMANCE_ORIGIN_PORT || '0', 10)

// Refuse anything but a loopback address: this server must never be
// reachable from another machine.
if (!/^127\.\d+\.\d+\.\d+$/.test(host) && host !== '::1') {
  console.error(`refusing non-loopback listen address ${host}`)
  process.exit(2)
}

function dispatch (request, response) {
  // A proxy may forward the absolute form; only the path matters here.
  const url = new URL(request.url, 'http://origin.invalid/')
  const segments = url.pathname.split('/').slice(1)
  const handler = handlers.get(segments.shift())
  if (handler === undefined) {
    response.writeHead(404, { 'Content-Type': 'text/plain' })
    response.end('not a conformance suite path\n')
    return
  }
  handler(segments, request, response)
}

const server = http.createServer(dispatch)
if (process.env.CONFORMANCE_ORIGIN_KEEPALIVE_MS) {
  server.keepAliveTimeout = parseInt(
    process.env.CONFORMANCE_ORIGIN_KEEPALIVE_MS, 10)
}
server.on('listening', () => {
  const address = server.address()
  console.log(`listening ${address.address} ${address.port}`)
})
server.listen(port, host)

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => process.exit(0))
}
