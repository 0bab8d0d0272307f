// The one table of opa-sync's error codes: what each means, the HTTP status a server of opa-sync
// answers with when the error reaches one, and whether trying again unchanged can succeed. Every error
// opa-sync raises (util/errors.ts) and every problem it reports on an origin (annotation, log) carries
// one of these codes; the classes accept only codes whose `retryable` matches them, so the type checker
// holds the table and the code together. OPA's own codes (`rego_parse_error`, …) are OPA's: they reach
// the status annotation inside OPA's error body, never as one of these. The README's "Error codes"
// table is checked against this one.

export interface ErrorCodeInfo {
  /** What happened, in words for the people who read a log line, an annotation or an HTTP answer. */
  readonly meaning: string;
  /** The status opa-sync's servers answer with; none for errors that never reach a client of ours. */
  readonly status?: number;
  /** True: the same input may succeed later (transport, 5xx, timeouts). False: the input must change. */
  readonly retryable: boolean;
}

export const ERROR_CODES = {
  // Configuration and start-up
  invalid_config: { meaning: 'the configuration is unusable; every problem is listed', retryable: false },
  listen_failed: {
    meaning: 'a server cannot listen on its address (port in use, no permission, no such address)',
    retryable: false,
  },
  opa_binary_missing: { meaning: 'the opa binary that validates bundles is not found', retryable: false },
  tls_file_unreadable: { meaning: 'a TLS certificate or key file cannot be read', retryable: false },
  invalid_signing_key: {
    meaning: 'the bundle signing key is unreadable or does not fit the algorithm',
    retryable: false,
  },
  token_file_unreadable: { meaning: 'a token file cannot be read, or holds no token', retryable: false },

  // OPA's REST API
  opa_unreachable: { meaning: 'OPA did not answer (connection refused or reset, DNS, TLS)', retryable: true },
  opa_timeout: { meaning: 'OPA did not answer within --opa-timeout', retryable: true },
  opa_server_error: { meaning: 'OPA answered 5xx', retryable: true },
  opa_bad_response: { meaning: 'OPA answered 2xx with a body that is not its JSON', retryable: true },
  opa_token_file: {
    meaning: 'the --opa-auth-token-file cannot be used (read again on the next call)',
    retryable: true,
  },
  opa_refused: {
    meaning: "OPA refused the request with a 4xx; OPA's own code and message are in its error body",
    retryable: false,
  },
  opa_invalid_json: { meaning: 'a value cannot be sent to OPA as JSON', retryable: false },
  opa_invalid_policy_id: {
    meaning: 'a policy id has a segment OPA’s REST paths cannot carry',
    retryable: false,
  },
  opa_invalid_data_path: {
    meaning: 'a data path has a segment OPA’s REST paths cannot carry',
    retryable: false,
  },
  opa_data_root_refused: {
    meaning: 'opa-sync never writes or removes the root of OPA’s data',
    retryable: false,
  },

  // The Kubernetes API
  kube_unreachable: { meaning: 'the API server did not answer', retryable: true },
  kube_timeout: { meaning: 'the API server did not answer in time', retryable: true },
  kube_bad_response: { meaning: 'the API server answered with a body that is not JSON', retryable: true },
  kube_auth: { meaning: 'the credentials of the kubeconfig could not be applied', retryable: true },
  kube_server_error: { meaning: 'the API server answered 5xx or 429', retryable: true },
  kube_http_error: {
    meaning: 'the API server refused the request (4xx; its status is kept)',
    retryable: false,
  },
  kube_no_cluster: { meaning: 'the kubeconfig has no current cluster', retryable: false },

  // What an origin (a ConfigMap, a file) can be refused for: in its annotation, or in the log
  invalid_json: { meaning: 'a data value is not valid JSON', retryable: false },
  invalid_yaml: { meaning: 'a data.yaml file of the policies folder is not valid YAML', retryable: false },
  invalid_data: { meaning: 'a data value is valid JSON but not an object', retryable: false },
  data_too_deep: { meaning: 'a data value is nested deeper than 1,000 levels', retryable: false },
  binary_data_not_loaded: { meaning: 'binaryData keys are never loaded', retryable: false },
  replicated_data_conflict: {
    meaning: 'a policy defines a rule where replicated objects go: those objects are left out of OPA',
    retryable: false,
  },
  rule_conflict: {
    meaning: 'two modules define one rule differently: the one whose id sorts first is loaded',
    retryable: false,
  },
  dependency_removed: {
    meaning: 'a module was unloaded because a module it needs was removed; it loads again once that is back',
    retryable: true,
  },
  data_at_root: {
    meaning: 'a data file at the root of the policies folder would replace all of OPA’s data',
    retryable: false,
  },
  data_overlap: {
    meaning: 'two data files claim the same document, or one inside the other',
    retryable: false,
  },
  invalid_bundle_name: { meaning: 'a bundle name breaks the naming rules', status: 400, retryable: false },
  invalid_bundle_path: {
    meaning: 'a module or document cannot have that path in a bundle',
    retryable: false,
  },
  bundle_roots_overlap: {
    meaning: 'the roots of two bundles overlap, so OPA could not activate both',
    retryable: false,
  },

  // The bundle builder
  bundle_conflict: { meaning: 'two inputs claim one bundle path, or one inside another', retryable: false },
  invalid_bundle_entry: { meaning: 'a bundle entry name is hostile or not what OPA loads', retryable: false },
  duplicate_bundle_entry: { meaning: 'a bundle entry is listed twice for signing', retryable: false },
  invalid_bundle_roots: {
    meaning: 'manifest roots overlap, are empty, or leave data outside',
    retryable: false,
  },
  invalid_data_path: { meaning: 'a data path has an empty segment', retryable: false },
  invalid_package: { meaning: 'a package path cannot be turned into a bundle root', retryable: false },
  invalid_rego_version: { meaning: 'rego_version must be 0 or 1', retryable: false },
  invalid_etag: { meaning: 'an ETag must be a quoted string', retryable: false },
  invalid_max_wait: { meaning: 'the long-poll cap must be a whole number of seconds ≥ 1', retryable: false },
  opa_check_failed: { meaning: 'opa check or opa inspect could not run or gave no report', retryable: true },

  // Publishing to an OCI registry (each push is retried with backoff; bundles are served over HTTP meanwhile)
  oci_unreachable: {
    meaning: 'the OCI registry did not answer (connection refused or reset, DNS, TLS, timeout)',
    retryable: true,
  },
  oci_auth_failed: {
    meaning: 'the OCI registry (or its token service) refused the credentials, or none are configured',
    retryable: true,
  },
  oci_credentials_unusable: {
    meaning: 'an OCI credentials file (docker config, password or token file) cannot be read or parsed',
    retryable: true,
  },
  oci_registry_error: {
    meaning: 'the OCI registry answered 5xx, 429 or an unusable answer',
    retryable: true,
  },
  oci_refused: {
    meaning: 'the OCI registry refused a push with a 4xx (its reason is in the message)',
    retryable: false,
  },
  invalid_oci_reference: {
    meaning: 'a bundle name gives a repository path the OCI distribution spec does not allow',
    retryable: false,
  },

  // Answers of the bundle server
  bundles_not_ready: { meaning: 'the first bundles are still being built', status: 503, retryable: true },
  bundle_not_found: { meaning: 'no bundle has that name', status: 404, retryable: false },
  not_found: { meaning: 'no route for that method and path', status: 404, retryable: false },
  unauthorized: { meaning: 'a valid bearer token is required', status: 401, retryable: false },
  invalid_partition_name: {
    meaning: 'a status partition name breaks the naming rules',
    status: 400,
    retryable: false,
  },
  invalid_status_report: {
    meaning: 'a status report is not the JSON OPA sends',
    status: 400,
    retryable: false,
  },
  request_too_large: { meaning: 'the request body is over the limit', status: 413, retryable: false },
  unsupported_encoding: {
    meaning: 'the request body’s Content-Encoding is not supported',
    status: 415,
    retryable: false,
  },
  unsupported_charset: {
    meaning: 'the request body’s charset is not supported',
    status: 415,
    retryable: false,
  },
  request_aborted: { meaning: 'the client went away while sending the body', status: 400, retryable: false },
  bad_request: { meaning: 'the request is malformed', status: 400, retryable: false },
  internal_error: { meaning: 'a bug: the log has the details', status: 500, retryable: false },
} as const satisfies Record<string, ErrorCodeInfo>;

export type ErrorCode = keyof typeof ERROR_CODES;

/** The codes of errors worth trying again: what `RetryableError` takes. */
export type RetryableCode = {
  [K in ErrorCode]: (typeof ERROR_CODES)[K]['retryable'] extends true ? K : never;
}[ErrorCode];

/** The codes of errors that need the input to change: what `PermanentError` takes. */
export type PermanentCode = Exclude<ErrorCode, RetryableCode>;

/** The status opa-sync's servers answer with for `code`, if it has one. */
export function statusOf(code: ErrorCode): number | undefined {
  const info: ErrorCodeInfo = ERROR_CODES[code];
  return info.status;
}
