// What the admission webhook says in kubectl's one line, and how it reads an AdmissionReview.
import { expect } from 'chai';
import {
  declaredPackage,
  describeRegoErrors,
  isMissingDependency,
  nbspPosition,
  type RegoError,
} from '../../src/admission/messages.js';
import { BadReviewError, parseReview, reviewAnswer } from '../../src/admission/review.js';

const typeError = (row: number): RegoError => ({
  code: 'rego_type_error',
  message: 'count: invalid argument(s)',
  file: 'opa/p/p.rego',
  row,
  col: 6,
});

describe('admission messages', () => {
  it('names the policy, row:col, code and message; the first three, then "and N more"', () => {
    const errors = [1, 2, 3, 4, 5].map(typeError);
    expect(describeRegoErrors(errors, () => undefined)).to.equal(
      'opa/p/p.rego:1:6: rego_type_error: count: invalid argument(s); ' +
        'opa/p/p.rego:2:6: rego_type_error: count: invalid argument(s); ' +
        'opa/p/p.rego:3:6: rego_type_error: count: invalid argument(s); and 2 more',
    );
  });

  it('says where a U+00A0 is when a parse error comes from one, once', () => {
    const text = 'package p\n\nallow {\n\u00a0 \u00a0 true\n}\n';
    const errors: RegoError[] = [
      {
        code: 'rego_parse_error',
        message: 'illegal non-breaking space character',
        file: 'opa/p/p.rego',
        row: 4,
        col: 1,
      },
      { code: 'rego_parse_error', message: 'illegal token', file: 'opa/p/p.rego', row: 4, col: 1 },
    ];
    expect(describeRegoErrors(errors, () => text)).to.equal(
      'opa/p/p.rego:4:1: rego_parse_error: illegal non-breaking space character (U+00A0, a non-breaking space as text copied from a web page has, at 4:1: replace it with a regular space); ' +
        'opa/p/p.rego:4:1: rego_parse_error: illegal token',
    );
    expect(nbspPosition('a\nbc\u00a0', 1)).to.deep.equal({ row: 2, col: 3 });
    expect(nbspPosition('plain', 1)).to.equal(undefined);
  });

  it('tells a dependency not loaded yet from an error of the ConfigMap itself', () => {
    const undefinedFn = (name: string): RegoError => ({
      code: 'rego_type_error',
      message: `undefined function ${name}`,
      file: 'x',
    });
    expect(isMissingDependency(undefinedFn('data.shared.lib.f'), ['app.user'])).to.equal(true);
    expect(isMissingDependency(undefinedFn('data.app.user.helper'), ['app.user'])).to.equal(false);
    expect(isMissingDependency(undefinedFn('data.app.username.f'), ['app.user'])).to.equal(true);
    expect(isMissingDependency(typeError(1), [])).to.equal(false);
    expect(declaredPackage('# c\npackage app.user\n\nx := 1\n')).to.equal('app.user');
  });
});

describe('AdmissionReview', () => {
  const review = (request: unknown): unknown => ({
    apiVersion: 'admission.k8s.io/v1',
    kind: 'AdmissionReview',
    request,
  });

  it('reads the fields the webhook uses', () => {
    const request = parseReview(
      review({
        uid: 'u1',
        operation: 'CREATE',
        namespace: 'opa',
        name: 'p',
        resource: { group: '', version: 'v1', resource: 'configmaps' },
        object: { metadata: { name: 'p' }, data: { 'p.rego': 'package p' } },
        dryRun: true,
      }),
    );
    expect(request).to.deep.include({
      uid: 'u1',
      operation: 'CREATE',
      resource: '/v1/configmaps',
      dryRun: true,
    });
    expect(request.object?.data).to.deep.equal({ 'p.rego': 'package p' });
  });

  it('refuses what is not an AdmissionReview v1, naming the field', () => {
    expect(() => parseReview({ apiVersion: 'admission.k8s.io/v1beta1', kind: 'AdmissionReview' })).to.throw(
      BadReviewError,
      'only admission.k8s.io/v1',
    );
    expect(() => parseReview(review({ operation: 'CREATE' }))).to.throw(BadReviewError, 'request.uid');
    expect(() => parseReview(review({ uid: 'u', operation: 'PATCH' }))).to.throw(
      BadReviewError,
      'request.operation',
    );
    expect(() => parseReview(review({ uid: 'u', operation: 'CREATE', object: { data: { k: 1 } } }))).to.throw(
      BadReviewError,
      'request.object.data',
    );
  });

  it('answers with the uid, the refusal as status.message and the warnings', () => {
    expect(reviewAnswer('u1', { allowed: false, message: 'no', warnings: ['w'] })).to.deep.equal({
      apiVersion: 'admission.k8s.io/v1',
      kind: 'AdmissionReview',
      response: {
        uid: 'u1',
        allowed: false,
        status: { code: 403, reason: 'Forbidden', message: 'no' },
        warnings: ['w'],
      },
    });
    expect(reviewAnswer('u2', { allowed: true, warnings: [] })).to.deep.equal({
      apiVersion: 'admission.k8s.io/v1',
      kind: 'AdmissionReview',
      response: { uid: 'u2', allowed: true },
    });
  });
});
