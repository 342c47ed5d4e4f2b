/**
 * URLs in messages: a store's or a broker's address is named in every error about it, never with its password.
 */

/** The URL with its password taken out. */
export const redactUrl = (url: string): string => {
  try {
    const parsed = new URL(url)
    if (parsed.password === "") return url
    parsed.password = ""
    return parsed.toString()
  } catch {
    return "(an unparseable URL)"
  }
}
