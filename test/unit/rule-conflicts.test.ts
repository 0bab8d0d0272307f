// The cheap half of finding rules two modules define differently: the scan of a module's rule heads,
// the index of which loaded modules define which rule, and reading OPA's two conflict errors.
import { expect } from 'chai';
import {
  RuleIndex,
  parseDefaultConflict,
  parseEvalConflict,
  ruleKeysOf,
} from '../../src/opa/rule-conflicts.js';

describe('rule conflicts', () => {
  it('finds the package and the rule heads that start a line, not functions, contains rules or keywords', () => {
    const text = [
      '# a comment',
      'package a.b',
      '',
      'import rego.v1',
      'x := 1',
      'default y := false',
      'y if input.ok',
      'z = 3',
      'obj[k] := v if some k, v in input',
      'r.s := 1',
      'f(q) := q',
      'set contains 1',
      'deny if {',
      '  inner := 2',
      '}',
      'else := 4',
    ].join('\n');
    expect(ruleKeysOf(text)).to.deep.equal(['a/b/deny', 'a/b/obj', 'a/b/r/s', 'a/b/x', 'a/b/y', 'a/b/z']);
    expect(ruleKeysOf('x := 1\n'), 'no package: nothing').to.deep.equal([]);
  });

  it('tells the rules more than one loaded module defines, and forgets removed modules', () => {
    const index = new RuleIndex();
    index.set('ns/a/x.rego', 'package t\n\nx := 1\nonly_a := 1\n');
    expect(index.shared('ns/a/x.rego')).to.deep.equal([]);
    index.set('ns/b/x.rego', 'package t\n\nx := 2\n');
    expect(index.shared('ns/a/x.rego')).to.deep.equal(['t/x']);
    expect(index.definers('t/x')).to.deep.equal(['ns/a/x.rego', 'ns/b/x.rego']);
    index.set('ns/b/x.rego', 'package t\n\ny := 2\n');
    expect(index.shared('ns/a/x.rego')).to.deep.equal([]);
    index.set('ns/b/x.rego', 'package t\n\nx := 2\n');
    index.remove('ns/b/x.rego');
    expect(index.shared('ns/a/x.rego')).to.deep.equal([]);
    expect(index.definers('t/x')).to.deep.equal(['ns/a/x.rego']);
  });

  it("reads OPA's eval conflict and default-rule conflict, with every module named", () => {
    const evalBody = {
      code: 'internal_error',
      message: 'error(s) occurred while evaluating query',
      errors: [
        {
          code: 'eval_conflict_error',
          message: 'rule data.t.x produced conflicting values:\n  1 at ns/b/x.rego:3\n  2 at ns/a/x.rego:3',
          location: { file: 'ns/b/x.rego', row: 3, col: 1 },
        },
      ],
    };
    expect(parseEvalConflict(evalBody)).to.deep.include({
      rule: 'data.t.x',
      files: ['ns/a/x.rego', 'ns/b/x.rego'],
    });
    const defaultBody = {
      code: 'invalid_parameter',
      message: 'error(s) occurred while compiling module(s)',
      errors: [
        {
          code: 'rego_type_error',
          message: 'multiple default rules data.u.y found at ns/d/d.rego:3, ns/c/d.rego:3',
          location: { file: 'ns/d/d.rego', row: 1, col: 1 },
        },
      ],
    };
    expect(parseDefaultConflict(defaultBody)).to.deep.include({
      rule: 'data.u.y',
      files: ['ns/c/d.rego', 'ns/d/d.rego'],
    });
    expect(parseDefaultConflict(evalBody)).to.equal(undefined);
    expect(parseEvalConflict(defaultBody)).to.equal(undefined);
    expect(parseEvalConflict({ errors: ['not an object', null] })).to.equal(undefined);
  });
});
