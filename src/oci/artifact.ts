// A bundle as the OCI artifact OPA pulls (`services[_].type: oci`): an image manifest with one layer
// `application/vnd.oci.image.layer.v1.tar+gzip` (the bundle's .tar.gz as it is served over HTTP,
// signatures included) and a config blob `application/vnd.oci.image.config.v1+json`. Deterministic:
// the same bundle gives the same blobs and manifest digest on every replica (no timestamps), so an
// unchanged revision pushes nothing.
import { createHash } from 'node:crypto';

export const MANIFEST_MEDIA_TYPE = 'application/vnd.oci.image.manifest.v1+json';
export const CONFIG_MEDIA_TYPE = 'application/vnd.oci.image.config.v1+json';
export const LAYER_MEDIA_TYPE = 'application/vnd.oci.image.layer.v1.tar+gzip';

export interface Blob {
  digest: string;
  bytes: Buffer;
}

export interface Artifact {
  config: Blob;
  layer: Blob;
  manifest: Blob;
}

export function digestOf(bytes: Buffer): string {
  return `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
}

function blob(bytes: Buffer): Blob {
  return { digest: digestOf(bytes), bytes };
}

/** The artifact of one bundle revision. The layer is titled `bundle.tar.gz`, the name `oras pull` writes. */
export function bundleArtifact(bundle: string, revision: string, bytes: Buffer): Artifact {
  const config = blob(Buffer.from('{}', 'utf8'));
  const layer = blob(bytes);
  const manifest = {
    schemaVersion: 2,
    mediaType: MANIFEST_MEDIA_TYPE,
    config: { mediaType: CONFIG_MEDIA_TYPE, digest: config.digest, size: config.bytes.length },
    layers: [
      {
        mediaType: LAYER_MEDIA_TYPE,
        digest: layer.digest,
        size: layer.bytes.length,
        annotations: { 'org.opencontainers.image.title': 'bundle.tar.gz' },
      },
    ],
    annotations: {
      'org.openpolicyagent.bundle.name': bundle,
      'org.opencontainers.image.revision': revision,
    },
  };
  return { config, layer, manifest: blob(Buffer.from(JSON.stringify(manifest), 'utf8')) };
}
