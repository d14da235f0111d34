/**
 * URL forms that are safe to log or put in an error message.
 */

/**
 * Returns scheme, host and path of a URL, without user info, query string or
 * fragment: signed URLs carry their credentials in the query string.
 */
export function urlForLog (url: URL | string): string {
  let parsed: URL
  try {
    parsed = typeof url === 'string' ? new URL(url) : url
  } catch {
    return '(invalid URL)'
  }
  return `${parsed.protocol}//${parsed.host}${parsed.pathname}`
}
