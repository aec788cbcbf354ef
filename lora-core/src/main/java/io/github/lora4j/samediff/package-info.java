/**
 * LoRA inside SameDiff graphs: {@link io.github.lora4j.samediff.LoraSameDiff#apply} adds adapters to the weights of
 * an existing graph (built with {@code sd.nn().linear}, {@code mmul}, or loaded with {@code fromFlatBuffers}), so
 * that {@code sd.fit} trains {@code A} and {@code B} alone; {@link io.github.lora4j.samediff.LoraSameDiffModel}
 * merges them into the weights, unloads them, and saves or loads them as PEFT files.
 * {@link io.github.lora4j.samediff.LoraSameDiff#linear} adds a new LoRA linear layer.
 *
 * <p>Every adapted op computes {@code x·W(ᵀ) + s·(x·Aᵀ)·Bᵀ}: two thin products beside the frozen one, never a dense
 * {@code W + s·B·A}. {@code W} is the graph's own array, shared and never copied; only merge and unmerge write it.
 */
package io.github.lora4j.samediff;
