// One ConfigMap into desired state: ids and paths, sorted keys, problems named by key, and a fingerprint
// that ignores annotations (so our status write never reloads) but not labels or data.
import { expect } from 'chai';
import fc from 'fast-check';
import type { V1ConfigMap } from '@kubernetes/client-node';
import {
  contentOf,
  dataState,
  fingerprint,
  policyState,
  type ConfigMapRules,
} from '../../src/sources/configmap-content.js';

function cm(data: Record<string, string>, extra: Partial<V1ConfigMap> = {}): V1ConfigMap {
  return { metadata: { namespace: 'opa', name: 'p', labels: { a: 'b' } }, data, ...extra };
}

describe('ConfigMap content', () => {
  it('says what a ConfigMap is by the rules the source and the admission webhook share', () => {
    const rules = (requireLabel: boolean): ConfigMapRules => ({
      policies: { enabled: true, label: 'openpolicyagent.org/policy', value: 'rego', requireLabel },
      data: { enabled: true, label: 'openpolicyagent.org/data', value: 'opa' },
    });
    const labelled = (labels: Record<string, string>, name = 'p'): V1ConfigMap => ({
      metadata: { namespace: 'opa', name, labels },
      data: { 'a.rego': 'package a', 'b.json': '{}' },
    });
    const policy = { 'openpolicyagent.org/policy': 'rego' };
    const data = { 'openpolicyagent.org/data': 'opa' };
    expect(contentOf(labelled(policy), rules(true))?.origin.role).to.equal('policy');
    expect(contentOf(labelled(data), rules(true))?.origin.role).to.equal('data');
    // Both labels: data only, as in kube-mgmt.
    expect(contentOf(labelled({ ...policy, ...data }), rules(true))?.origin.role).to.equal('data');
    expect(contentOf(labelled({}), rules(true))).to.equal(undefined);
    // Seed-era --policies: unlabelled ConfigMaps with .rego keys are policies (those keys only).
    expect(contentOf(labelled({}), rules(false))?.modules.map((m) => m.id)).to.deep.equal(['opa/p/a.rego']);
    expect(contentOf(labelled({}, 'kube-root-ca.crt'), rules(false))).to.equal(undefined);
    expect(contentOf({ metadata: { namespace: 'opa', name: 'x' }, data: { k: 'v' } }, rules(false))).to.equal(
      undefined,
    );
  });

  it('makes one module per key, id <ns>/<name>/<key>, in sorted key order', () => {
    const state = policyState(
      cm({ 'z.rego': 'package z', 'a.rego': 'package a', 'm-1.x.rego': 'package m' }),
      {
        regoKeysOnly: false,
      },
    );
    expect(state.modules.map((m) => m.id)).to.deep.equal([
      'opa/p/a.rego',
      'opa/p/m-1.x.rego',
      'opa/p/z.rego',
    ]);
    expect(state.origin).to.deep.equal({ kind: 'configmap', role: 'policy', namespace: 'opa', name: 'p' });
    expect(state.problems).to.deep.equal([]);
  });

  it('skips keys that are not .rego in the seed-era unlabelled mode', () => {
    const state = policyState(cm({ 'a.rego': 'package a', 'README.md': '# x' }), { regoKeysOnly: true });
    expect(state.modules.map((m) => m.id)).to.deep.equal(['opa/p/a.rego']);
  });

  it('reports binaryData keys instead of loading them', () => {
    const state = policyState(cm({ 'a.rego': 'package a' }, { binaryData: { 'b.bin': 'AA==' } }), {
      regoKeysOnly: false,
    });
    expect(state.modules).to.have.length(1);
    expect(state.problems).to.deep.equal([
      {
        key: 'b.bin',
        code: 'binary_data_not_loaded',
        message: 'key "b.bin" is in binaryData: policies are read from .data only, so it was not loaded',
      },
    ]);
  });

  it('parses data keys as JSON objects at <ns>/<name>/<key>, naming the key of each problem', () => {
    const state = dataState(
      cm({ 'ok.json': '{"x":1}', 'bad.json': '{', 'arr.json': '[1]', 'num.json': '3', 'nul.json': 'null' }),
    );
    expect(state.documents).to.deep.equal([{ path: ['opa', 'p', 'ok.json'], value: { x: 1 } }]);
    expect(state.dataRoot).to.deep.equal(['opa', 'p']);
    expect(state.problems.map((p) => [p.key, p.code])).to.deep.equal([
      ['arr.json', 'invalid_data'],
      ['bad.json', 'invalid_json'],
      ['nul.json', 'invalid_data'],
      ['num.json', 'invalid_data'],
    ]);
    expect(state.problems[0]?.message).to.equal('key "arr.json" must hold a JSON object, not an array');
    expect(state.problems[1]?.message).to.match(/^key "bad\.json" is not valid JSON: /);
    expect(state.problems[3]?.message).to.equal('key "num.json" must hold a JSON object, not a number');
  });

  it('refuses data nested deeper than 1,000 levels with a problem naming the key, and loads 1,000', () => {
    const nested = (depth: number): string => `${'{"a":'.repeat(depth)}1${'}'.repeat(depth)}`;
    const state = dataState(cm({ 'deep.json': nested(6000), 'edge.json': nested(1000), 'ok.json': '{}' }));
    expect(state.documents.map((d) => d.path[2])).to.deep.equal(['edge.json', 'ok.json']);
    expect(state.problems).to.deep.equal([
      {
        key: 'deep.json',
        code: 'data_too_deep',
        message: 'key "deep.json" is nested deeper than 1000 levels: not loaded',
      },
    ]);
    // What is loaded can be serialised, as the sinks do.
    expect(() => JSON.stringify(state.documents)).not.to.throw();
    expect(dataState(cm({ 'x.json': nested(1001) })).problems.map((p) => p.code)).to.deep.equal([
      'data_too_deep',
    ]);
  });

  it('fingerprints labels and data, not annotations or resourceVersion', () => {
    fc.assert(
      fc.property(
        fc.dictionary(fc.string(), fc.string()),
        fc.dictionary(fc.string(), fc.string()),
        fc.string(),
        (data, annotations, rv) => {
          const base = cm(data);
          const touched = cm(data, {
            metadata: { ...base.metadata, annotations, resourceVersion: rv },
          });
          expect(fingerprint(touched)).to.equal(fingerprint(base));
        },
      ),
    );
    const base = cm({ 'a.rego': 'x' });
    expect(fingerprint(cm({ 'a.rego': 'y' }))).to.not.equal(fingerprint(base));
    expect(fingerprint({ ...base, metadata: { ...base.metadata, labels: {} } })).to.not.equal(
      fingerprint(base),
    );
    expect(fingerprint(cm({ 'a.rego': 'x' }, { binaryData: { b: 'AA==' } }))).to.not.equal(fingerprint(base));
  });
});
