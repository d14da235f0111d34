/**
 * Free TCP port on loopback, for processes that take a fixed port.
 */
import { createServer, type AddressInfo } from 'node:net'

/** Returns a loopback port that was free a moment ago. */
export async function freePort (): Promise<number> {
  const server = createServer()
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as AddressInfo
  await new Promise(resolve => server.close(resolve))
  return port
}
