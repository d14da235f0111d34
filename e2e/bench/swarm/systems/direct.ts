/**
 * Baseline without any swarm: every peer downloads the whole file from the
 * origin with curl, all at the same time.
 */
import { join } from 'node:path'
import { missingExecutable } from './executables.ts'
import type { BenchSystem } from './system.ts'

export const directSystem: BenchSystem = {
  id: 'direct',
  title: 'direct (curl)',

  async checkAvailable () {
    return await missingExecutable(['curl'])
  },

  async setUp (context) {
    return {
      launchPeer (host) {
        const outputPath = join(context.runDir, host.name, context.file.name)
        const process = context.createProcess({
          label: `${host.name} curl`,
          host,
          command: 'curl',
          args: ['-sS', '--fail', '--create-dirs', '--max-time', String(Math.ceil(context.timeoutMs / 1000)), '-o', outputPath, context.origin.url]
        })
        return { process, outputPath, completion: 'exit' }
      }
    }
  }
}
