/**
 * Completion-time CDFs as a standalone SVG: one panel per N, one step line
 * per system (share of peers complete against seconds since the common
 * start), and a dashed line at T*.
 */
import { completionTimes, type BenchResults } from './results.ts'

const PANEL_WIDTH = 380
const PANEL_HEIGHT = 280
const MARGIN = { left: 56, right: 16, top: 76, bottom: 44 }
const COLORS: Record<string, string> = { dfnode: '#d62728', direct: '#7f7f7f', bittorrent: '#1f77b4', ipfs: '#2ca02c' }
const FALLBACK_COLORS = ['#9467bd', '#8c564b', '#e377c2', '#17becf']

/** Renders the CDF plot of every scenario as an SVG document. */
export function renderCdfSvg (results: BenchResults): string {
  const scenarios = results.scenarios
  // At least two panels wide, so the title fits when there is one scenario.
  const width = Math.max(2, scenarios.length) * PANEL_WIDTH
  const height = PANEL_HEIGHT + 28
  const systems = [...new Map(scenarios.flatMap((scenario) => scenario.records.map((record) => [record.systemId, record.title] as const))).entries()]
  const colorOf = (id: string, index: number): string => COLORS[id] ?? FALLBACK_COLORS[index % FALLBACK_COLORS.length] ?? '#000'

  const parts: string[] = []
  parts.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="11">`)
  parts.push(`<rect width="${width}" height="${height}" fill="white"/>`)
  const { settings } = results
  parts.push('<text x="8" y="16" font-size="13">Completion-time CDF per system (dashed line: lower bound T*)</text>')
  parts.push(`<text x="8" y="32">file ${(settings.fileBytes / 2 ** 20).toFixed(0)} MiB; Mbit/s: peers ${settings.peerMbit}, origin ${settings.originMbit}, supernode ${settings.supernodeMbit}</text>`)

  // Legend below the title.
  let legendX = 8
  for (const [index, [id, title]] of systems.entries()) {
    parts.push(`<line x1="${legendX}" y1="46" x2="${legendX + 18}" y2="46" stroke="${colorOf(id, index)}" stroke-width="2"/>`)
    parts.push(`<text x="${legendX + 22}" y="50">${escapeXml(title)}</text>`)
    legendX += 30 + title.length * 6.5
  }

  for (const [panel, scenario] of scenarios.entries()) {
    const originX = panel * PANEL_WIDTH + MARGIN.left
    const plotWidth = PANEL_WIDTH - MARGIN.left - MARGIN.right
    const plotTop = MARGIN.top
    const plotHeight = PANEL_HEIGHT - MARGIN.top - MARGIN.bottom + 28
    const allTimes = scenario.records.flatMap((record) => completionTimes(record))
    const xMax = niceCeiling(Math.max(scenario.lowerBound.seconds, ...allTimes, 1) * 1.05)
    const x = (seconds: number): number => originX + plotWidth * seconds / xMax
    const y = (share: number): number => plotTop + plotHeight * (1 - share)

    // Axes, ticks and title.
    parts.push(`<text x="${originX + plotWidth / 2}" y="${plotTop - 6}" text-anchor="middle" font-size="12">N = ${scenario.peerCount}</text>`)
    parts.push(`<rect x="${originX}" y="${plotTop}" width="${plotWidth}" height="${plotHeight}" fill="none" stroke="#444"/>`)
    for (const tick of ticks(xMax)) {
      parts.push(`<line x1="${x(tick)}" y1="${y(0)}" x2="${x(tick)}" y2="${y(0) + 4}" stroke="#444"/>`)
      parts.push(`<text x="${x(tick)}" y="${y(0) + 16}" text-anchor="middle">${formatTick(tick)}</text>`)
    }
    for (const share of [0, 0.25, 0.5, 0.75, 1]) {
      parts.push(`<line x1="${originX - 4}" y1="${y(share)}" x2="${originX}" y2="${y(share)}" stroke="#444"/>`)
      parts.push(`<text x="${originX - 6}" y="${y(share) + 4}" text-anchor="end">${share.toFixed(2)}</text>`)
    }
    parts.push(`<text x="${originX + plotWidth / 2}" y="${y(0) + 32}" text-anchor="middle">seconds since start</text>`)
    const labelY = plotTop + plotHeight / 2
    parts.push(`<text x="${originX - 40}" y="${labelY}" text-anchor="middle" transform="rotate(-90 ${originX - 40} ${labelY})">share of peers complete</text>`)
    parts.push(`<line x1="${x(scenario.lowerBound.seconds)}" y1="${plotTop}" x2="${x(scenario.lowerBound.seconds)}" y2="${y(0)}" stroke="#000" stroke-dasharray="4 3"/>`)

    // One step line per system over the peers that completed.
    for (const [index, [id]] of systems.entries()) {
      const record = scenario.records.find((entry) => entry.systemId === id)
      if (record == null) continue
      const times = completionTimes(record)
      if (times.length === 0) continue
      const points: string[] = [`${x(0)},${y(0)}`]
      times.forEach((seconds, rank) => {
        points.push(`${x(seconds)},${y(rank / record.peerCount)}`, `${x(seconds)},${y((rank + 1) / record.peerCount)}`)
      })
      parts.push(`<polyline points="${points.join(' ')}" fill="none" stroke="${colorOf(id, index)}" stroke-width="2"/>`)
    }
  }

  parts.push('</svg>')
  return parts.join('\n') + '\n'
}

/** Rounds up to 1, 2 or 5 times a power of ten. */
export function niceCeiling (value: number): number {
  const power = 10 ** Math.floor(Math.log10(value))
  for (const step of [1, 2, 5, 10]) {
    if (step * power >= value) return step * power
  }
  return 10 * power
}

function ticks (max: number): number[] {
  const step = niceCeiling(max / 5)
  const values: number[] = []
  for (let tick = 0; tick <= max + 1e-9; tick += step) values.push(tick)
  return values
}

function formatTick (value: number): string {
  return Number.isInteger(value) ? String(value) : value.toFixed(1)
}

function escapeXml (text: string): string {
  return text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;')
}
