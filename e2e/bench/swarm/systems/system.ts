/**
 * The contract between the measuring harness and one distribution system
 * (curl, BitTorrent, IPFS, dfnode). A system starts its services (seeders,
 * tracker, supernode) in `setUp` and returns how to launch one peer. The
 * harness starts every peer at a common instant, detects completion, stops
 * everything and measures the same counters for every system.
 */
import type { HostProcess } from '../host-process.ts'
import type { Host, Testbed } from '../testbed.ts'

/** The file every peer fetches. */
export interface BenchFile {
  /** Path of the original on the machine, readable from every namespace. */
  path: string
  /** File name, also the last segment of the origin URL path. */
  name: string
  size: number
  sha256: string
}

export interface OriginEndpoint {
  host: Host
  port: number
  /** http://<origin address>:<port>/<file name> */
  url: string
}

export interface ProcessSpec {
  /** Name in reports, e.g. `p03 aria2c`. */
  label: string
  host: Host
  command: string
  args: readonly string[]
  cwd?: string
}

/** What a system gets to set up its run; every process it starts is tracked and stopped by the harness. */
export interface BenchContext {
  testbed: Testbed
  /** Repository root (contains bin/ and node_modules/). */
  projectRoot: string
  /** Node 24 binary used for Node programs. */
  nodeBinary: string
  /** Empty directory for this system's run; removed afterwards unless kept. */
  runDir: string
  file: BenchFile
  origin: OriginEndpoint
  supernode: Host
  peers: readonly Host[]
  /** Time from the common start until a peer counts as failed. */
  timeoutMs: number
  /** Creates a process in a host's namespace, tracked for stopping and usage. Not yet started. */
  createProcess: (spec: ProcessSpec) => HostProcess
}

export interface PeerLaunch {
  process: HostProcess
  /** File the peer writes; its SHA-256 is checked afterwards. */
  outputPath: string
  /**
   * 'exit': the peer is complete when it exits with code 0. A function: the
   * peer is complete at the first stdout line it accepts.
   */
  completion: 'exit' | ((line: string) => boolean)
}

export interface SystemSetup {
  /** Builds the process of the peer on `host`; the harness starts it. */
  launchPeer: (host: Host, index: number) => Promise<PeerLaunch> | PeerLaunch
  /** Notes for the report, built from the peers' completion lines. */
  summarize?: (completionLines: readonly string[]) => string[]
}

export interface BenchSystem {
  /** Short id used by --systems. */
  id: string
  /** Name in the table and plot. */
  title: string
  /** Returns why the system cannot run on this machine, or undefined when it can. */
  checkAvailable: (projectRoot: string) => Promise<string | undefined>
  /** Starts the system's services and waits until they are ready. */
  setUp: (context: BenchContext) => Promise<SystemSetup>
}
