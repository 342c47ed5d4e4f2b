/**
 * Random ids. `crypto.randomUUID()` answers a string that V8 keeps as a tree of about twenty concatenated pieces
 * (some 480 bytes); ids live as long as their run's records, so they are flattened once (some 60 bytes).
 */
export const randomId = (): string => crypto.randomUUID().trim()
