// Ferry's version, reported by GET /v1/node.
export const FERRY_VERSION = '0.1.0';
