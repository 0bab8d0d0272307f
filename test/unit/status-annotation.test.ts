// The status annotation's value: byte-exact ok, one error object, or an array for several errors,
// always with the same key order.
import { expect } from 'chai';
import { renderStatus } from '../../src/kube/status-annotation.js';

describe('renderStatus', () => {
  it('is exactly {"status":"ok"} without errors', () => {
    expect(renderStatus([])).to.equal('{"status":"ok"}');
  });

  it("keeps OPA's error body, in the order code, message, errors", () => {
    const opaError = {
      errors: [
        {
          code: 'rego_parse_error',
          message: 'unexpected eof token',
          location: { file: 'opa/p/a.rego', row: 3, col: 1 },
        },
      ],
      message: 'error(s) occurred while compiling module(s)',
      code: 'invalid_parameter',
    };
    expect(renderStatus([opaError])).to.equal(
      '{"status":"error","error":{"code":"invalid_parameter","message":"error(s) occurred while compiling module(s)",' +
        '"errors":[{"code":"rego_parse_error","message":"unexpected eof token","location":{"file":"opa/p/a.rego","row":3,"col":1}}]}}',
    );
  });

  it('renders our own errors as {code, message} and several errors as an array', () => {
    const value = renderStatus([
      { code: 'invalid_json', message: 'key "a.json" is not valid JSON: boom' },
      { code: 'opa_unreachable', message: 'PUT http://127.0.0.1:1/v1/data/x failed: connect ECONNREFUSED' },
    ]);
    expect(JSON.parse(value)).to.deep.equal({
      status: 'error',
      error: [
        { code: 'invalid_json', message: 'key "a.json" is not valid JSON: boom' },
        { code: 'opa_unreachable', message: 'PUT http://127.0.0.1:1/v1/data/x failed: connect ECONNREFUSED' },
      ],
    });
    expect(value.startsWith('{"status":"error","error":[{"code":"invalid_json","message":')).to.equal(true);
  });
});
