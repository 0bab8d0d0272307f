// What the web page shows of a bundle's publication to an OCI registry. opa-sync does not publish to
// one yet: this is the seam that work fills. The OCI publisher implements OciStatusSource; until it
// exists the page says "not configured" for every bundle.

/** The OCI publication of one bundle. */
export type OciPublishStatus =
  | { configured: false }
  | {
      configured: true;
      /** Where the bundle is pushed, e.g. `registry.example.com/policies:latest`. */
      reference: string;
      /** The revision last pushed, and when (ISO 8601). */
      pushedRevision?: string | undefined;
      pushedAt?: string | undefined;
      /** The manifest digest the registry answered with. */
      digest?: string | undefined;
      /** Why the last push failed, when it did. */
      error?: string | undefined;
    };

/** Anything that knows the OCI publication state of bundles (the OCI publisher, once there is one). */
export interface OciStatusSource {
  ociStatus(bundle: string): OciPublishStatus;
}

/** The state of every bundle when no OCI registry is configured. */
export const OCI_NOT_CONFIGURED: OciStatusSource = { ociStatus: () => ({ configured: false }) };
