// Client side of the http-cache-tests suite, as a one-shot command.
//
// Usage: node run.mjs BASE_URL OUTPUT_JSON
//
// Runs every test of the suite's default set (tests/index.mjs, the set
// cache-tests.fyi reports; 157 of them are "required" for a shared
// cache) through the cache at BASE_URL, e.g. http://localhost:8080, and
// writes one record per test to OUTPUT_JSON:
//   {"id", "uuid", "suite", "kind", "name", "outcome", "passed", "message"}
// where outcome is the test's own result: "pass", "fail" (assertion),
// "setup" (a setup check failed, so the behaviour under test was never
// reached) or "retry"; uuid is the path segment of the test's URLs, to
// find its requests in the cache's logs. "passed" is what cache-tests.fyi counts: the test
// passed and so did every test it depends on, transitively; a cache
// that stores nothing passes 90 required tests on their own, but only
// 47 counted this way.
//
// Whatever name BASE_URL carries goes out as the Host header, but every
// connection is pinned to the loopback address in CONFORMANCE_CONNECT_TO
// (127.0.0.1 by default): no name lookup, nothing leaves the machine.
// Each request is bounded by CONFORMANCE_FETCH_TIMEOUT_MS (10 s by
// default, well above the suite's longest 3 s pause) so a cache that
// never answers fails its tests instead of hanging the run.
// CONFORMANCE_ONLY, a comma-separated list of test ids, runs and reports
// only those tests (to re-run suspected regressions); "passed" then
// ignores dependencies that did not run.

import fs from 'fs'
import http from 'http'
import process from 'process'

import fetch from 'node-fetch'
import { runTests, getResults } from 'http-cache-tests/client/runner.mjs'
import { testUUIDs } from 'http-cache-tests/client/test.mjs'
import suites from 'http-cache-tests/tests/index.mjs'

const [baseUrl, outputPath] = process.argv.slice(2)
if (!baseUrl || !outputPath) {
  console.error('usage: node run.mjs BASE_URL OUTPUT_JSON')
  process.exit(2)
}

const connectTo = process.env.CONFORMANCE_CONNECT_TO || '127.0.0.1'
if (!/^127\.\d+\.\d+\.\d+$/.test(connectTo)) {
  console.error(`refusing non-loopback connect address ${connectTo}`)
  process.exit(2)
}
const fetchTimeoutMs = parseInt(
  process.env.CONFORMANCE_FETCH_TIMEOUT_MS || '10000', 10)

function pinnedLookup (hostname, options, callback) {
  if (options && options.all) {
    callback(null, [{ address: connectTo, family: 4 }])
  } else {
    callback(null, connectTo, 4)
  }
}

const agent = new http.Agent({ lookup: pinnedLookup })

const only = new Set(
  (process.env.CONFORMANCE_ONLY || '').split(',').filter(id => id !== ''))
const selected = only.size === 0
  ? suites
  : suites.map(suite => ({
    ...suite,
    tests: suite.tests.filter(test => only.has(test.id))
  }))

function boundedFetch (url, init) {
  if (!url.startsWith(baseUrl)) {
    return Promise.reject(new Error(`unexpected URL ${url}`))
  }
  return fetch(url, { ...init, agent, timeout: fetchTimeoutMs })
}

function outcomeOf (result) {
  if (result === true) return ['pass', '']
  if (result === undefined) return ['untested', '']
  const [kind, message] = result
  if (kind === 'Setup') {
    return [message === 'retry' ? 'retry' : 'setup', message]
  }
  return ['fail', `${kind}: ${message}`]
}

function countsAsPassed (byId, id) {
  const test = byId.get(id)
  if (test === undefined) return only.size > 0
  if (!test.ownPass) return false
  return (test.depends_on || []).every(dep => countsAsPassed(byId, dep))
}

function records (results) {
  const byId = new Map()
  for (const suite of selected) {
    for (const test of suite.tests) {
      const ownPass = results[test.id] === true
      byId.set(test.id, { depends_on: test.depends_on, ownPass })
    }
  }
  const rows = []
  for (const suite of selected) {
    for (const test of suite.tests) {
      if (test.browser_only === true) continue
      const [outcome, message] = outcomeOf(results[test.id])
      rows.push({
        id: test.id,
        uuid: testUUIDs[test.id] || '',
        suite: suite.id,
        kind: test.kind || 'required',
        name: test.name,
        outcome,
        passed: countsAsPassed(byId, test.id),
        message: message || ''
      })
    }
  }
  return rows
}

runTests(selected, boundedFetch, false, baseUrl)
  .then(() => {
    const rows = records(getResults())
    fs.writeFileSync(outputPath, JSON.stringify(rows, null, 1) + '\n')
    const passed = rows.filter(
      r => r.kind === 'required' && r.passed).length
    const required = rows.filter(r => r.kind === 'required').length
    console.log(`required passed ${passed} of ${required}`)
  })
  .catch(err => {
    console.error(err)
    process.exit(1)
  })
