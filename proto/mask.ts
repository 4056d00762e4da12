// The freeze mask on the gRPC wire: proto enums are upper-case strings, recipe/freeze-mask.ts's states lower-case.
import type { FreezeMask, LayerState } from '../recipe/freeze-mask.ts';
import type { FreezeMaskMsg, LayerState as LayerStateMsg } from './messages.ts';

const TO_WIRE: Record<LayerState, LayerStateMsg> = { frozen: 'FROZEN', trainable: 'TRAINABLE', lora: 'LORA' };

export function maskToWire(mask: FreezeMask): FreezeMaskMsg {
  return { layers: mask.layers.map((s) => TO_WIRE[s]), embed: mask.embed, head: mask.head };
}

export function maskFromWire(msg: FreezeMaskMsg | null): FreezeMask {
  if (!msg) throw new Error('the coordinator sent a stage without its freeze mask; coordinator and worker run different propipe versions: update both');
  const layers = msg.layers.map((s, i) => {
    const state = (Object.keys(TO_WIRE) as LayerState[]).find((k) => TO_WIRE[k] === s);
    if (!state) throw new Error(`freeze mask layer ${i}: unknown state ${s}; coordinator and worker run different propipe versions: update both`);
    return state;
  });
  return { layers, embed: msg.embed, head: msg.head };
}
