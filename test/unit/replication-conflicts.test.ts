// Reading OPA's refusals for rule/data conflicts (both shapes OPA v1.22 answers with), and the view of a
// collection without the objects a rule keeps out.
import { expect } from 'chai';
import { DesiredState } from '../../src/model/desired-state.js';
import { ReplicationConflicts, parseConflicts } from '../../src/opa/replication-conflicts.js';

describe('replication conflicts', () => {
  it("reads a refused data write's message, one conflict or several", () => {
    expect(
      parseConflicts({
        code: 'invalid_parameter',
        message:
          '1 error occurred: opa/np/p.rego:3: rego_compile_error: conflicting rule for data path kubernetes/networkpolicies/foo found',
      }),
    ).to.deep.equal([{ moduleId: 'opa/np/p.rego', path: ['kubernetes', 'networkpolicies', 'foo'] }]);
    expect(
      parseConflicts({
        code: 'invalid_parameter',
        message:
          '2 errors occurred:\nopa/a/p.rego:3: rego_compile_error: conflicting rule for data path k/np/x found\nopa/a/p.rego:4: rego_compile_error: conflicting rule for data path k/np/y found',
      }).map((c) => c.path.join('/')),
    ).to.deep.equal(['k/np/x', 'k/np/y']);
  });

  it("reads a refused policy's errors[], and nothing from other errors", () => {
    expect(
      parseConflicts({
        code: 'invalid_parameter',
        message: 'error(s) occurred while compiling module(s)',
        errors: [
          {
            code: 'rego_compile_error',
            message: 'conflicting rule for data path kubernetes/networkpolicies/foo found',
            location: { file: 'opa/np/p.rego', row: 3, col: 1 },
          },
          {
            code: 'rego_type_error',
            message: 'undefined function data.x.f',
            location: { file: 'opa/b/b.rego' },
          },
        ],
      }),
    ).to.deep.equal([{ moduleId: 'opa/np/p.rego', path: ['kubernetes', 'networkpolicies', 'foo'] }]);
  });

  it('gives a view of a collection without the objects at, inside or around an excluded path', () => {
    const state = new DesiredState();
    state.defineCollection('np', ['kubernetes', 'networkpolicies']);
    for (const [ns, name] of [
      ['foo', 'a'],
      ['foo', 'b'],
      ['bar', 'c'],
    ] as const) {
      state.setEntry('np', [ns, name], { ns, name });
    }
    const conflicts = new ReplicationConflicts(state);
    expect(conflicts.locate(['kubernetes', 'networkpolicies', 'foo'])).to.deep.equal({
      collection: 'np',
      relPath: ['foo'],
    });
    expect(conflicts.locate(['kubernetes'])).to.deep.equal({ collection: 'np', relPath: [] });
    expect(conflicts.locate(['other', 'x'])).to.equal(undefined);

    conflicts.add({ collection: 'np', relPath: ['foo'], moduleId: 'm', text: 't' });
    conflicts.add({ collection: 'np', relPath: ['bar', 'c', 'spec'], moduleId: 'm2', text: undefined });
    const view = conflicts.view.collection('np');
    expect([...(view?.entries.keys() ?? [])]).to.deep.equal([]);
    expect(view?.entries.get('foo/a')).to.equal(undefined);
    expect(conflicts.excludedCount('np')).to.equal(3);
    // Released when the module's text changes; kept while it is the same.
    expect(conflicts.release('m', 't')).to.deep.equal([]);
    expect(conflicts.release('m', 'other text').map((x) => x.relPath)).to.deep.equal([['foo']]);
    expect([...(conflicts.view.collection('np')?.entries.keys() ?? [])]).to.deep.equal(['foo/a', 'foo/b']);
    expect(new Map(conflicts.view.collection('np')?.entries).size).to.equal(2);
  });
});
