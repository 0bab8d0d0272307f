// Writes a kubeconfig file (JSON, which kubectl and client-node both read) for a bearer-token user of
// the test control plane.
import { writeFileSync } from 'node:fs';

export function writeKubeconfig(
  file: string,
  server: string,
  caPem: string,
  user: string,
  token: string,
): string {
  writeFileSync(
    file,
    JSON.stringify(
      {
        apiVersion: 'v1',
        kind: 'Config',
        clusters: [
          {
            name: 'test',
            cluster: { server, 'certificate-authority-data': Buffer.from(caPem).toString('base64') },
          },
        ],
        users: [{ name: user, user: { token } }],
        contexts: [{ name: 'test', context: { cluster: 'test', user } }],
        'current-context': 'test',
      },
      null,
      2,
    ),
    { mode: 0o600 },
  );
  return file;
}
