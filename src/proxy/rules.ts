/**
 * Routing of blob GETs: the configured rules in order, first match wins.
 * Without a match, a blob GET goes through the swarm when its origin is trusted
 * (see `trustedForSwarm`), and straight to the upstream otherwise.
 */
import type { ProxyOptions, Route, RouteRule } from './options.ts'
import type { RequestMode } from './request-target.ts'

/** Returns the route of a blob GET for `url`; `trusted` is the route's default without a matching rule. */
export function routeOf (url: URL, rules: readonly RouteRule[], trusted = true): Route {
  const href = url.href
  for (const rule of rules) {
    if (rule.match.test(href)) return rule.route
  }
  return trusted ? 'swarm' : 'direct'
}

/**
 * Tells whether the origin of a blob GET may decide the access check for blobs in the swarm. The
 * check sends that origin a request on the client's behalf, and a blob in the swarm may have
 * come from another client's pull. In forward mode the client names the host, and a server of its
 * own would allow every digest. So only the origins (scheme, host and port) of configured
 * registries count there, because another port of a registry's host may be another server.
 * Mirror requests go to a configured registry, and intercepted ones to a host the operator chose.
 */
export function trustedForSwarm (mode: RequestMode, url: URL, options: Pick<ProxyOptions, 'registries'>): boolean {
  if (mode !== 'forward') return true
  return options.registries.some(registry => registry.url.origin === url.origin)
}
