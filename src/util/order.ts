/**
 * Orders strings by UTF-16 code units, as `<` does. For the ASCII keys and ids pgark sorts
 * (backup ids, pack ids, object keys) it is the same order as localeCompare, without loading
 * ICU's collation data: that alone added ~3 MiB to the RSS of every backup and restore.
 */
export function byCodeUnits(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
