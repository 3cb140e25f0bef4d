// Image references as Docker reads them, and which registries a job's image may come from.
// The registry is where the engine (or Fargate) would connect to pull: an image name is an
// address, so it is checked like one — without resolving or contacting anything.
import { BlockList, isIPv4, isIPv6 } from 'node:net';

export interface ImageReference {
  /** Where the image is pulled from: `docker.io` for names without a registry part. */
  readonly registry: string;
  /** The repository path inside the registry (`library/alpine` for `alpine`). */
  readonly repository: string;
  readonly tag?: string;
  readonly digest?: string;
}

export const DOCKER_HUB = 'docker.io';
/** What Docker itself normalises to Docker Hub. */
const HUB_ALIASES = new Set(['docker.io', 'index.docker.io']);

/**
 * Splits an image reference the way Docker's reference package does: the first path
 * component is a registry only if it contains "." or ":" or is "localhost"; then an optional
 * `:tag` on the last component and an optional `@digest`. Syntax is checked by the job spec.
 */
export function parseImageReference(image: string): ImageReference {
  let rest = image;
  let digest: string | undefined;
  const at = rest.indexOf('@');
  if (at >= 0) {
    digest = rest.slice(at + 1);
    rest = rest.slice(0, at);
  }
  let registry = DOCKER_HUB;
  const slash = rest.indexOf('/');
  if (slash >= 0) {
    const first = rest.slice(0, slash);
    if (first.includes('.') || first.includes(':') || first === 'localhost' || first.startsWith('[')) {
      registry = HUB_ALIASES.has(first.toLowerCase()) ? DOCKER_HUB : first;
      rest = rest.slice(slash + 1);
    }
  }
  let tag: string | undefined;
  const colon = rest.lastIndexOf(':');
  if (colon > rest.lastIndexOf('/')) {
    tag = rest.slice(colon + 1);
    rest = rest.slice(0, colon);
  }
  const repository = registry === DOCKER_HUB && !rest.includes('/') ? `library/${rest}` : rest;
  return {
    registry,
    repository,
    ...(tag === undefined ? {} : { tag }),
    ...(digest === undefined ? {} : { digest }),
  };
}

/** Docker Hub (and its pull host) and the public ECR gallery. */
export const DEFAULT_REGISTRIES: readonly string[] = ['docker.io', 'registry-1.docker.io', 'public.ecr.aws'];

/** The host of a registry, without port or IPv6 brackets, lower case. */
function hostOf(registry: string): string {
  const lower = registry.toLowerCase();
  if (lower.startsWith('[')) {
    const end = lower.indexOf(']');
    return end < 0 ? lower.slice(1) : lower.slice(1, end);
  }
  const colon = lower.lastIndexOf(':');
  return colon < 0 ? lower : lower.slice(0, colon);
}

/** IPv4 written the ways a resolver accepts (`127.1`, `0x7f.0.0.1`, `2130706433`), as dotted quad. */
function ipv4Of(host: string): string | undefined {
  if (isIPv4(host)) return host;
  const parts = host.split('.');
  if (parts.length > 4 || !parts.every((p) => /^(0x[0-9a-f]+|[0-9]+)$/.test(p))) return undefined;
  const numbers = parts.map((p) =>
    p.startsWith('0x') ? Number.parseInt(p, 16) : /^0[0-7]+$/.test(p) ? Number.parseInt(p, 8) : Number(p),
  );
  if (numbers.some((n) => !Number.isFinite(n))) return undefined;
  const last = numbers.pop() ?? 0;
  if (numbers.some((n) => n > 255) || last >= 2 ** (8 * (4 - numbers.length))) return undefined;
  let value = last;
  numbers.forEach((n, i) => {
    value += n * 2 ** (8 * (3 - i));
  });
  return [24, 16, 8, 0].map((shift) => Math.floor(value / 2 ** shift) % 256).join('.');
}

// Kept apart: a BlockList checks IPv4 against IPv6 rules too, as IPv4-mapped addresses.
const SPECIAL_V4 = new BlockList();
const SPECIAL_V6 = new BlockList();
for (const [network, prefix] of [
  ['0.0.0.0', 8],
  ['10.0.0.0', 8],
  ['100.64.0.0', 10],
  ['127.0.0.0', 8],
  ['169.254.0.0', 16],
  ['172.16.0.0', 12],
  ['192.0.0.0', 24],
  ['192.168.0.0', 16],
  ['198.18.0.0', 15],
  ['224.0.0.0', 4],
  ['240.0.0.0', 4],
] as const) {
  SPECIAL_V4.addSubnet(network, prefix, 'ipv4');
}
for (const [network, prefix] of [
  ['::', 128],
  ['::1', 128],
  ['64:ff9b::', 96],
  ['fc00::', 7],
  ['fe80::', 10],
  ['ff00::', 8],
] as const) {
  SPECIAL_V6.addSubnet(network, prefix, 'ipv6');
}

const isInternalV4 = (v4: string | undefined): boolean => v4 !== undefined && SPECIAL_V4.check(v4, 'ipv4');

/** The IPv4 address inside an IPv4-mapped IPv6 one (`::ffff:127.0.0.1`, `::ffff:7f00:1`). */
function mappedIpv4Of(v6: string): string | undefined {
  const match = /^(?:0{0,4}:){0,5}:?ffff:(.+)$/.exec(v6);
  const tail = match?.[1];
  if (tail === undefined) return undefined;
  if (isIPv4(tail)) return tail;
  const halves = /^([0-9a-f]{1,4}):([0-9a-f]{1,4})$/.exec(tail);
  if (halves === null) return undefined;
  const [high, low] = [Number.parseInt(halves[1] ?? '0', 16), Number.parseInt(halves[2] ?? '0', 16)];
  return [high >> 8, high & 255, low >> 8, low & 255].join('.');
}

/**
 * True when the registry is this machine or a private, link-local or otherwise
 * non-public address (as a literal or `localhost`): pulling from it would make the engine
 * connect inside the host's own networks.
 */
export function isInternalRegistry(registry: string): boolean {
  const host = hostOf(registry);
  if (host === 'localhost' || host.endsWith('.localhost')) return true;
  if (isIPv6(host)) return SPECIAL_V6.check(host, 'ipv6') || isInternalV4(mappedIpv4Of(host));
  return isInternalV4(ipv4Of(host));
}

function globToRegExp(pattern: string): RegExp {
  const escaped = pattern.replace(/[.+?^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*');
  return new RegExp(`^${escaped}$`, 'i');
}

/**
 * Whether `registry` matches one of `patterns` (`*` matches anything). An internal address
 * passes only when a pattern names it exactly, never through a wildcard.
 */
export function registryAllowed(registry: string, patterns: readonly string[]): boolean {
  const normalised = HUB_ALIASES.has(registry.toLowerCase()) ? DOCKER_HUB : registry.toLowerCase();
  if (isInternalRegistry(normalised)) {
    return patterns.some((pattern) => !pattern.includes('*') && pattern.toLowerCase() === normalised);
  }
  return patterns.some((pattern) => globToRegExp(pattern).test(normalised));
}
