// The pure pieces of `npm run bench` (scripts/bench/): statistics, the command line, and the rewriting
// of one scenario's section of docs/benchmarks.md without touching the rest.
import { expect } from 'chai';
import { parseArgs } from '../../scripts/bench/args.js';
import { begin, end, replaceSection, skeleton, verdictOf } from '../../scripts/bench/report.js';
import { median, pairedRatios, percentile, stat } from '../../scripts/bench/stats.js';

describe('bench: statistics', () => {
  it('percentiles by nearest rank are always one of the samples', () => {
    const values = Array.from({ length: 100 }, (_, i) => 100 - i); // 100 … 1, unsorted
    expect(percentile(values, 50)).to.equal(50);
    expect(percentile(values, 99)).to.equal(99);
    expect(percentile(values, 100)).to.equal(100);
    expect(percentile([7], 99)).to.equal(7);
    expect(percentile([], 50)).to.be.NaN;
  });

  it('median, min/median/max and paired ratios ignore non-finite values', () => {
    expect(median([3, 1, 2])).to.equal(2);
    expect(median([4, 1, 3, 2])).to.equal(2.5);
    expect(stat([5, NaN, 1, 3])).to.deep.equal({ min: 1, median: 3, max: 5, n: 3 });
    expect(pairedRatios([10, 20, 30], [5, 0, 10])).to.deep.equal([2, 3]);
  });

  it('verdicts say by how much a goal is missed', () => {
    expect(verdictOf(10, 10)).to.deep.equal({ verdict: 'met', detail: '' });
    expect(verdictOf(12, 10)).to.deep.equal({ verdict: 'missed', detail: 'by 20 %' });
    expect(verdictOf(31, 10).detail).to.equal('by 3.1× the limit');
    expect(verdictOf(NaN, 10).verdict).to.equal('n/a');
  });
});

describe('bench: command line', () => {
  const known = ['startup', 'p1', 'p2', 'p3', 'p9'];

  it('takes scenarios, lists and numbers; p7 is part of p1; no scenario means all', () => {
    expect(parseArgs(['p7', '--size', '1000,10_000', '--runs=3'], known)).to.deep.include({
      scenarios: ['p1'],
      sizes: [1000, 10000],
      runs: 3,
    });
    expect(parseArgs([], known).scenarios).to.deep.equal(known);
    expect(parseArgs(['p1', '--profile=/tmp/prof'], known).profileDir).to.equal('/tmp/prof');
    expect(parseArgs(['p1'], known).profileDir).to.equal(undefined);
  });

  it('refuses unknown scenarios, unknown options and non-positive numbers', () => {
    expect(() => parseArgs(['p4'], known)).to.throw(/unknown scenario p4/);
    expect(() => parseArgs(['--sizes', '1'], known)).to.throw(/unknown option --sizes/);
    expect(() => parseArgs(['--runs', '0'], known)).to.throw(/not a positive number/);
    expect(() => parseArgs(['--runs'], known)).to.throw(/needs a value/);
  });
});

describe('bench: report sections', () => {
  it('rewrites only the section of the scenario run, keeping hand-written notes', () => {
    let doc = skeleton('# Benchmarks', { p1: 'notes about p1' });
    doc = replaceSection(doc, 'p1', 'first');
    doc = replaceSection(doc, 'p2', 'other');
    doc = `${doc}\nhand-written tail\n`;
    const again = replaceSection(doc, 'p1', 'second');
    expect(again).to.include(`${begin('p1')}\nsecond\n${end('p1')}`);
    expect(again).not.to.include('first');
    expect(again).to.include(`${begin('p2')}\nother\n${end('p2')}`);
    expect(again).to.include('notes about p1');
    expect(again).to.include('hand-written tail');
    expect(again.replace('second', 'first')).to.equal(doc);
  });

  it('adds a section missing from the document at its end', () => {
    const doc = replaceSection('# Benchmarks\n', 'p9', 'body');
    expect(doc).to.match(/^# Benchmarks\n\n<!-- bench:p9:begin -->\nbody\n<!-- bench:p9:end -->\n/);
  });

  it('gives a section added to an existing document its notes area with the placeholder', () => {
    const doc = replaceSection('# Benchmarks\n', 'serve', 'body', '> notes to write');
    expect(doc).to.match(/<!-- bench:serve:end -->\n\n<!-- bench:serve:notes [^\n]*-->\n> notes to write\n$/);
    expect(replaceSection(doc, 'serve', 'again', '> other')).not.to.include('> other');
  });
});
