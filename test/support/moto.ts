// The suites start moto server the way `ferry emulate aws` does.
export { freePort, startMoto } from '../../shared/adapters/emulated/moto-server.ts';
