/**
 * Routing of blob GETs: the configured rules in order, first match wins;
 * without a match a blob GET goes through the swarm.
 */
import type { Route, RouteRule } from './options.ts'

/** Returns the route of a blob GET for `url`. */
export function routeOf (url: URL, rules: readonly RouteRule[]): Route {
  const href = url.href
  for (const rule of rules) {
    if (rule.match.test(href)) return rule.route
  }
  return 'swarm'
}
