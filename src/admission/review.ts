// The `admission.k8s.io/v1` AdmissionReview of the webhook: the request read from hostile JSON (only
// the fields the webhook uses, each checked), and the answer (uid echoed, allowed, status message,
// warnings). v1beta1 is not served: the ValidatingWebhookConfiguration asks for v1 only.
import type { V1ConfigMap } from '@kubernetes/client-node';

export type Operation = 'CREATE' | 'UPDATE' | 'DELETE' | 'CONNECT';

export interface AdmissionRequest {
  uid: string;
  operation: Operation;
  namespace: string;
  name: string;
  /** The resource, as `group/version/resource` (`/v1/configmaps` for ConfigMaps). */
  resource: string;
  /** The ConfigMap as it would be (CREATE, UPDATE). */
  object: V1ConfigMap | undefined;
  /** The ConfigMap as it is (UPDATE, DELETE). */
  oldObject: V1ConfigMap | undefined;
  dryRun: boolean;
}

/** What the webhook answers. */
export interface AdmissionAnswer {
  allowed: boolean;
  /** Why it is refused: `kubectl` prints it after "denied the request: ". */
  message?: string | undefined;
  /** `kubectl` prints each as `Warning: …`. */
  warnings: string[];
}

export class BadReviewError extends Error {}

const OPERATIONS: readonly Operation[] = ['CREATE', 'UPDATE', 'DELETE', 'CONNECT'];

function isRecord(value: unknown): value is Record<string, unknown> {
  return value !== null && typeof value === 'object' && !Array.isArray(value);
}

function configMapOf(value: unknown, field: string): V1ConfigMap | undefined {
  if (value === undefined || value === null) return undefined;
  if (!isRecord(value)) throw new BadReviewError(`request.${field} must be an object`);
  const data = value.data;
  if (data !== undefined && data !== null) {
    if (!isRecord(data) || Object.values(data).some((v) => typeof v !== 'string')) {
      throw new BadReviewError(`request.${field}.data must map keys to strings`);
    }
  }
  return value;
}

/** Reads an AdmissionReview v1 request; throws BadReviewError naming what is wrong. */
export function parseReview(body: unknown): AdmissionRequest {
  if (!isRecord(body)) throw new BadReviewError('the body must be an AdmissionReview object');
  if (body.apiVersion !== 'admission.k8s.io/v1' || body.kind !== 'AdmissionReview') {
    throw new BadReviewError(
      'only admission.k8s.io/v1 AdmissionReview is served (admissionReviewVersions: [v1])',
    );
  }
  const request = body.request;
  if (!isRecord(request)) throw new BadReviewError('request is missing');
  const { uid, operation, namespace, name } = request;
  if (typeof uid !== 'string' || uid === '') throw new BadReviewError('request.uid is missing');
  if (typeof operation !== 'string' || !OPERATIONS.includes(operation as Operation)) {
    throw new BadReviewError(
      `request.operation ${JSON.stringify(operation)} is not one of ${OPERATIONS.join(', ')}`,
    );
  }
  const resource = isRecord(request.resource) ? request.resource : {};
  const part = (v: unknown): string => (typeof v === 'string' ? v : '');
  return {
    uid,
    operation: operation as Operation,
    namespace: typeof namespace === 'string' ? namespace : '',
    name: typeof name === 'string' ? name : '',
    resource: `${part(resource.group)}/${part(resource.version)}/${part(resource.resource)}`,
    object: configMapOf(request.object, 'object'),
    oldObject: configMapOf(request.oldObject, 'oldObject'),
    dryRun: request.dryRun === true,
  };
}

/** The AdmissionReview that answers request `uid`. */
export function reviewAnswer(uid: string, answer: AdmissionAnswer): unknown {
  return {
    apiVersion: 'admission.k8s.io/v1',
    kind: 'AdmissionReview',
    response: {
      uid,
      allowed: answer.allowed,
      ...(answer.allowed || answer.message === undefined
        ? {}
        : { status: { code: 403, reason: 'Forbidden', message: answer.message } }),
      ...(answer.warnings.length === 0 ? {} : { warnings: answer.warnings }),
    },
  };
}
