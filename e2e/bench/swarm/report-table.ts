/** The markdown report: settings, one table row per system and N, notes and failures. */
import { lastLines } from './host-process.ts'
import { completionTimes, median, type BenchResults } from './results.ts'

const MIB = 2 ** 20

/** Renders the whole report as markdown. */
export function renderReport (results: BenchResults): string {
  const { settings } = results
  const lines: string[] = []
  lines.push('# Swarm benchmark', '')
  lines.push(`Command: \`${results.command}\``, '')
  lines.push(`Started ${results.startedAt} on ${results.machine}.`, '')
  lines.push(`File ${formatMiB(settings.fileBytes)} MiB. Links (Mbit/s, upload = download): peers ${settings.peerMbit}, origin ${settings.originMbit}, supernode ${settings.supernodeMbit}.`)
  lines.push(`T* per N: ${results.scenarios.map((scenario) => `N=${scenario.peerCount} ${scenario.lowerBound.seconds.toFixed(1)} s (${scenario.lowerBound.limitedBy})`).join(', ')}.`, '')
  lines.push(renderTable(results), '')
  lines.push(...renderNotes(results))
  return lines.join('\n') + '\n'
}

/** Renders the results table alone. */
export function renderTable (results: BenchResults): string {
  const header = ['system', 'N', 'status', 'last s', 'median s', 'last / T*', 'origin tx / F', 'origin HTTP / F', 'peers tx / F', 'supernode tx / F', 'CPU s max/proc', 'CPU s all', 'peak RSS MiB max/proc', 'machine CPU % mean (peak)']
  const rows = [header, header.map(() => '---')]
  const fileBytes = results.settings.fileBytes
  for (const scenario of results.scenarios) {
    for (const record of scenario.records) {
      const times = completionTimes(record)
      const last = record.status === 'ok' ? times.at(-1) : undefined
      const cpu = record.processes.map((process) => process.cpuSeconds).filter((value): value is number => value != null)
      const rss = record.processes.map((process) => process.maxRssKiB).filter((value): value is number => value != null)
      const measured = record.status === 'ok' || times.length > 0
      rows.push([
        record.title,
        String(record.peerCount),
        record.status === 'ok' ? 'ok' : `failed (${times.length}/${record.peerCount} done)`,
        last != null ? last.toFixed(1) : '—',
        times.length > 0 ? median(times).toFixed(1) : '—',
        last != null ? (last / scenario.lowerBound.seconds).toFixed(2) : '—',
        measured ? ratio(record.originTxBytes, fileBytes) : '—',
        measured ? ratio(record.originHttpBytes, fileBytes) : '—',
        measured ? ratio(record.peersTxBytes, fileBytes) : '—',
        measured ? ratio(record.supernodeTxBytes, fileBytes) : '—',
        cpu.length > 0 ? Math.max(...cpu).toFixed(1) : '—',
        cpu.length > 0 ? cpu.reduce((sum, value) => sum + value, 0).toFixed(1) : '—',
        rss.length > 0 ? (Math.max(...rss) / 1024).toFixed(0) : '—',
        record.machineCpu != null ? `${record.machineCpu.meanPercent.toFixed(0)} (${record.machineCpu.peakPercent.toFixed(0)})` : '—'
      ])
    }
  }
  return rows.map((row) => `| ${row.join(' | ')} |`).join('\n')
}

function renderNotes (results: BenchResults): string[] {
  const lines: string[] = ['## Testbed and systems', '']
  lines.push(
    '- Each host is a network namespace with one veth to a Linux bridge in a namespace of its own; addresses 198.18.0.1 (origin), 198.18.0.2 (supernode), 198.18.0.10 and up (peers), /16. IPv6 is off. No latency is added, so round trips are well under 1 ms.',
    '- Each link is limited with tc: HTB at the rate with a byte FIFO of 20 ms (at least 256 KiB) below it, on the host\'s veth egress for upload and on the bridge port\'s egress for download.',
    '- Systems run one after another on the same testbed, each with the same file. Services (HTTP origin, tracker, seeders, supernode) are ready before the common start. Peers keep serving until the last one completes or the timeout passes, then every process gets SIGTERM.',
    '- direct: `curl` from every peer to the HTTP origin.',
    '- BitTorrent: `mktorrent` (piece size chosen for 1000 to 2000 pieces), `opentracker` and an `aria2c` seeder on the origin host, `aria2c` on every peer; DHT and local peer discovery off, peer exchange on.',
    '- IPFS: Helia nodes (TCP, Noise, Yamux, Bitswap, filesystem blockstore; @helia/unixfs defaults of 1 MiB raw leaves). The seeder on the origin host imports the file before the start. Every peer dials the seeder and every other peer.',
    '- dfnode: `dfnode supernode` on the supernode host, allowed to fetch from the origin, and `dfnode fetch URL --supernode ... --json` on every peer.',
    ''
  )
  lines.push('## How each column is measured', '')
  lines.push(
    '- last s, median s: seconds from the common start of all peers to each peer\'s completion (curl: process exit; aria2c: its on-bt-download-complete hook; Helia and dfnode: the completion line on stdout). Every output is checked against the origin file\'s SHA-256; a mismatch counts as not done.',
    '- T*: max(F/u_origin, F/d_min, N·F/(u_origin + Σ u_peers)); the supernode\'s upload is not in the sum.',
    '- tx columns: bytes sent by the host\'s veth (/sys/class/net/eth0/statistics/tx_bytes in its namespace) from just before the start until every process of the system stopped, headers and ACKs included, divided by the file size F. Peers that only download still send about 2 % of F as TCP ACKs.',
    '- origin HTTP / F: body bytes the HTTP origin handed to responses (its /__stats counter). BitTorrent and IPFS seed from their own process on the origin host, so only origin tx counts for them.',
    '- CPU s, peak RSS: user + system seconds and ru_maxrss of each process from GNU time (/usr/bin/time), for every peer and service process of the system; the HTTP origin server is shared by all systems and not included.',
    '- machine CPU: busy share of all cores from /proc/stat between the common start and the last completion (or timeout); peak is the highest 0.5 s sample. It counts every process on the machine and the kernel\'s packet processing, not only the system under test.',
    ''
  )

  const noted = results.scenarios.flatMap((scenario) => scenario.records.filter((record) => record.notes.length > 0 || record.failure != null))
  if (noted.length > 0) {
    lines.push('## Notes and failures', '')
    for (const record of noted) {
      for (const note of record.notes) lines.push(`- ${record.title}, N=${record.peerCount}: ${note}`)
      if (record.failure != null) lines.push(`- ${record.title}, N=${record.peerCount}: failed: ${oneLine(record.failure)}`)
    }
    lines.push('')
  }
  return lines
}

/** Flattens a failure message into one markdown-safe line of at most 1500 characters. */
function oneLine (text: string): string {
  const line = lastLines(text, 20).replace(/\|/g, '\\|')
  return line.length > 1500 ? `${line.slice(0, 1500)}…` : line
}

function ratio (bytes: number, fileBytes: number): string {
  return (bytes / fileBytes).toFixed(2)
}

function formatMiB (bytes: number): string {
  return Number.isInteger(bytes / MIB) ? String(bytes / MIB) : (bytes / MIB).toFixed(2)
}
