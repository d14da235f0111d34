/**
 * BitTorrent baseline: mktorrent builds the .torrent, opentracker runs on
 * the origin host, an aria2c seeder on the origin host seeds the file, and
 * every peer runs aria2c. Peers keep seeding until the harness stops them.
 * A hook that aria2c runs when a download completes, before seeding, prints
 * the completion line. DHT and local peer discovery are off; peer exchange
 * stays on (aria2c's default).
 */
import { chmod, mkdir, writeFile } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { runCommand, runInNamespace } from '../commands.ts'
import { TestbedError } from '../errors.ts'
import { missingExecutable } from './executables.ts'
import type { BenchContext, BenchSystem } from './system.ts'

const TRACKER_PORT = 6969
const PEER_PORT = 6881
const COMPLETE_MARK = 'DFB-BT-COMPLETE'

/** Options every aria2c process gets: a closed testbed with a tracker only, quiet console. */
const COMMON_ARIA2_OPTIONS = [
  '--enable-dht=false',
  '--enable-dht6=false',
  '--bt-enable-lpd=false',
  '--disable-ipv6=true',
  `--listen-port=${PEER_PORT}`,
  '--seed-ratio=0.0',
  '--file-allocation=none',
  '--summary-interval=0',
  '--show-console-readout=false',
  '--console-log-level=warn',
  '--auto-file-renaming=false',
  '--allow-overwrite=true'
]

/**
 * Piece length exponent for mktorrent: about 1000 to 2000 pieces, between
 * 256 KiB and 4 MiB, which is the range common BitTorrent clients pick.
 */
export function pieceLengthExponent (fileBytes: number): number {
  let exponent = 18
  while (exponent < 22 && fileBytes / 2 ** exponent > 2048) exponent++
  return exponent
}

export const bittorrentSystem: BenchSystem = {
  id: 'bittorrent',
  title: 'BitTorrent (aria2c)',

  async checkAvailable () {
    return await missingExecutable(['aria2c', 'mktorrent', 'opentracker', 'curl'])
  },

  async setUp (context) {
    const origin = context.origin.host
    const announce = `http://${origin.address}:${TRACKER_PORT}/announce`
    const seedMinutes = String(Math.ceil(context.timeoutMs / 60_000) + 5)

    // 1. The torrent and its info hash.
    const torrent = join(context.runDir, `${context.file.name}.torrent`)
    await runCommand('mktorrent', ['-a', announce, '-l', String(pieceLengthExponent(context.file.size)), '-o', torrent, context.file.path], { timeoutMs: 300_000 })
    const infoHash = await readInfoHash(torrent)

    // 2. The tracker, with the torrent on its whitelist (Debian builds opentracker in whitelist mode).
    const trackerDir = join(context.runDir, 'tracker')
    await mkdir(trackerDir, { recursive: true, mode: 0o755 })
    await chmod(trackerDir, 0o755)
    await writeFile(join(trackerDir, 'whitelist'), `${infoHash}\n`, { mode: 0o644 })
    const tracker = context.createProcess({
      label: `${origin.name} opentracker`,
      host: origin,
      command: 'opentracker',
      args: ['-i', origin.address, '-p', String(TRACKER_PORT), '-P', String(TRACKER_PORT), '-d', trackerDir, '-w', 'whitelist'],
      cwd: trackerDir
    })
    tracker.start()
    await waitForSeeders(context, infoHash, 0)

    // 3. The seeder on the origin host, registered at the tracker before the start.
    const seeder = context.createProcess({
      label: `${origin.name} aria2c seeder`,
      host: origin,
      command: 'aria2c',
      args: [...COMMON_ARIA2_OPTIONS, `--dir=${dirname(context.file.path)}`, '--bt-seed-unverified=true', `--seed-time=${seedMinutes}`, torrent]
    })
    seeder.start()
    await waitForSeeders(context, infoHash, 1)

    // 4. The completion hook: aria2c runs it with GID, file count and path once the download is complete.
    const hook = join(context.runDir, 'on-complete.sh')
    await writeFile(hook, `#!/bin/sh\necho "${COMPLETE_MARK} $3"\n`, { mode: 0o755 })

    return {
      async launchPeer (host) {
        const peerDir = join(context.runDir, host.name)
        await mkdir(peerDir, { recursive: true })
        const process = context.createProcess({
          label: `${host.name} aria2c`,
          host,
          command: 'aria2c',
          args: [...COMMON_ARIA2_OPTIONS, `--dir=${peerDir}`, `--seed-time=${seedMinutes}`, `--on-bt-download-complete=${hook}`, torrent]
        })
        return { process, outputPath: join(peerDir, context.file.name), completion: (line) => line.startsWith(COMPLETE_MARK) }
      }
    }
  }
}

/** Reads the info hash that `aria2c -S` prints for a torrent file. */
async function readInfoHash (torrent: string): Promise<string> {
  const output = await runCommand('aria2c', ['-S', torrent])
  const match = /^Info Hash: ([0-9a-f]{40})$/m.exec(output)
  if (match?.[1] == null) throw new TestbedError(`no info hash in 'aria2c -S ${torrent}' output: ${output.slice(0, 500)}`)
  return match[1]
}

/**
 * Polls the tracker's scrape until it responds and lists at least `seeders`
 * complete peers for the torrent; bounded to 100 attempts 100 ms apart.
 */
async function waitForSeeders (context: BenchContext, infoHash: string, seeders: number): Promise<void> {
  const origin = context.origin.host
  const encoded = infoHash.replace(/../g, (pair) => `%${pair}`)
  const url = `http://${origin.address}:${TRACKER_PORT}/scrape?info_hash=${encoded}`
  let last = ''
  for (let attempt = 0; attempt < 100; attempt++) {
    try {
      last = await runInNamespace(origin.namespace, ['curl', '-sS', '--max-time', '2', url])
      const complete = /8:completei(\d+)e/.exec(last)
      if (complete != null && Number(complete[1]) >= seeders) return
      if (complete == null && seeders === 0 && last.startsWith('d')) return
    } catch (err) {
      last = (err as Error).message
    }
    await sleep(100)
  }
  throw new TestbedError(`tracker at ${url} did not list ${seeders} seeder(s) within 10 s; last answer: ${last.slice(0, 300)}`)
}
