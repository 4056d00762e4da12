// Every gradient rule, registered from this one list.
import type { GradRule } from '../rule.ts';
import { sigmoidRule, tanhRule } from './activation.ts';
import { addSubRule, divRule, identityRule, mulRule, negRule, sumRule } from './arithmetic.ts';
import { castRule } from './cast.ts';
import { concatRule, sliceRule, splitRule } from './concat-slice.ts';
import { crossEntropyRule } from './cross-entropy.ts';
import { expRule, logRule } from './exp-log.ts';
import { gatherElementsRule, gatherRule } from './gather.ts';
import { expandRule, reshapeRule, transposeRule } from './layout.ts';
import { matmulRule } from './matmul.ts';
import { matmulNBitsRule } from './matmul-nbits.ts';
import { powRule, reciprocalRule, sqrtRule } from './power.ts';
import { reduceMaxRule, reduceMeanRule, reduceSumRule } from './reduce.ts';
import { rmsNormRule } from './rms-norm.ts';
import { rotaryRule } from './rotary.ts';
import { logSoftmaxRule, softmaxRule } from './softmax.ts';
import { whereRule } from './where.ts';

export const RULES: readonly GradRule[] = [
  matmulRule, matmulNBitsRule,
  addSubRule, sumRule, mulRule, divRule, negRule, identityRule,
  powRule, sqrtRule, reciprocalRule,
  expRule, logRule,
  sigmoidRule, tanhRule,
  softmaxRule, logSoftmaxRule,
  reduceSumRule, reduceMeanRule, reduceMaxRule,
  transposeRule, reshapeRule, expandRule,
  concatRule, sliceRule, splitRule,
  gatherRule, gatherElementsRule,
  whereRule,
  castRule,
  crossEntropyRule,
  rmsNormRule, rotaryRule,
];
