// The suites start moto server the way `ferry emulate aws` does.
export { freePort, type LocalServer, startMoto } from '../../shared/adapters/emulated/moto-server.ts';
