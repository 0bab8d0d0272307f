// What the web page shows of a bundle's publication to an OCI registry: read from the OCI publisher's
// states (src/oci/oci-publisher.ts) with --oci-repository; "not configured" for every bundle without it.
import type { OciBundleState } from '../oci/oci-publisher.js';

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

/** The page's view of the OCI publisher's states (read anew each time the page asks). */
export function ociStatusOf(states: () => readonly OciBundleState[]): OciStatusSource {
  return {
    ociStatus(bundle) {
      const state = states().find((s) => s.bundle === bundle);
      if (state === undefined) return { configured: false };
      return {
        configured: true,
        reference: state.repository ?? '(no valid repository for this bundle name)',
        pushedRevision: state.pushed?.revision,
        pushedAt: state.pushed?.at,
        digest: state.pushed?.digest,
        error: state.error === undefined ? undefined : `${state.error.code}: ${state.error.message}`,
      };
    },
  };
}
