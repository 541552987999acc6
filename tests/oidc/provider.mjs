// panva's oidc-provider (OpenID Certified) on 127.0.0.1, configured for vaultd's login tests.
//
// Usage: node provider.mjs SETTINGS.json. The settings (written by tests/oidc_provider.py) name
// the port, the clients (fake secrets and a test key's public JWK only) and the token lifetimes.
// Dev interactions accept any login and password; PKCE is required; the device flow, token
// introspection and resource indicators (RFC 8707: JWT access tokens whose `aud` is the
// resource) are on; refresh tokens rotate, and presenting a rotated one revokes the grant.
// Prints "ready <issuer>" on stdout once it listens.
import { readFileSync } from 'node:fs';
import Provider from 'oidc-provider';

const settings = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const issuer = `http://127.0.0.1:${settings.port}`;

const provider = new Provider(issuer, {
  clients: settings.clients,
  scopes: ['openid', 'offline_access', 'api:read'],
  pkce: { required: () => true },
  rotateRefreshToken: true,
  ttl: {
    AccessToken: settings.access_token_ttl,
    RefreshToken: settings.refresh_token_ttl,
    AuthorizationCode: 60,
    DeviceCode: 600,
    Grant: 3600,
    IdToken: 3600,
    Interaction: 600,
    Session: 3600,
  },
  features: {
    devInteractions: { enabled: true },
    deviceFlow: { enabled: true },
    introspection: { enabled: true },
    revocation: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => undefined,
      useGrantedResource: () => true,
      getResourceServerInfo: (ctx, resourceIndicator) => ({
        scope: 'api:read',
        audience: resourceIndicator,
        accessTokenTTL: settings.access_token_ttl,
        accessTokenFormat: 'jwt',
      }),
    },
  },
  findAccount: async (ctx, id) => ({ accountId: id, claims: async () => ({ sub: id }) }),
});
provider.on('server_error', (ctx, err) => console.error('server_error', err));

provider.listen(settings.port, '127.0.0.1', () => {
  console.log(`ready ${issuer}`);
});
