// The network-policy article end to end (use cases 1 and 2), on the real kube-apiserver and
// kube-controller-manager with OPA as a real TLS admission webhook and opa-sync as its sidecar: once
// with the article's own flags and Rego, once with today's flags and Rego v1, and once with the OPA
// pulling its policies and the NetworkPolicy data as bundles from opa-sync (nothing pushed).
import { expect } from 'chai';
import {
  ARTICLE_VARIANT,
  BUNDLES_VARIANT,
  POD_DENIAL,
  RISKY_DENIAL,
  TODAY_VARIANT,
  runSeedScenario,
  type SeedVariant,
} from '../harness/seed-scenario.js';

const silent = { section: () => undefined, command: () => undefined, note: () => undefined };

function scenario(variant: SeedVariant): void {
  it(variant.name, async function () {
    this.timeout(300_000);
    const record = await runSeedScenario(variant, silent);
    expect(record.ensureNapStatus).to.equal('{"status":"ok"}');
    expect(record.enforceNapStatus).to.equal('{"status":"ok"}');
    // Without a NetworkPolicy, then with only app-inbound-policy2 (app: backend): denied, same message.
    expect(record.deniedMessages).to.have.length(2);
    for (const message of record.deniedMessages) expect(message).to.match(POD_DENIAL);
    expect(record.podsWithoutPolicy).to.deep.equal([]);
    expect(record.podsWithPolicy).to.have.length(2);
    for (const pod of record.podsWithPolicy) expect(pod).to.match(/^prop-deployment-[a-z0-9]+-[a-z0-9]{5}$/);
    expect(record.riskyPolicy.code).to.not.equal(0);
    // As the article prints it: the reason first, then the webhook's message.
    expect(record.riskyPolicy.stderr.trim()).to.equal(
      `Error from server (${RISKY_DENIAL}): error when creating "risky-policy.yaml": ` +
        `admission webhook "validating-webhook.openpolicyagent.org" denied the request: ${RISKY_DENIAL}`,
    );
    expect(record.recreatedPolicy.code).to.equal(0);
    expect(record.recreatedPolicy.stdout).to.include(
      'networkpolicy.networking.k8s.io/app-inbound-policy created',
    );
  });
}

describe('the network-policy article end to end (real control plane, OPA webhook, opa-sync)', () => {
  scenario(ARTICLE_VARIANT);
  scenario(TODAY_VARIANT);
  scenario(BUNDLES_VARIANT);
});
