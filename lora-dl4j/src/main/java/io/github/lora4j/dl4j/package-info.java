/**
 * LoRA inside DL4J networks: {@link io.github.lora4j.dl4j.LoraDl4j} turns the {@code DenseLayer}s, {@code OutputLayer}s
 * and {@code RnnOutputLayer}s of a {@code MultiLayerNetwork} or {@code ComputationGraph} into LoRA layers
 * ({@link io.github.lora4j.dl4j.LoraDenseLayer}, {@link io.github.lora4j.dl4j.LoraOutputLayer},
 * {@link io.github.lora4j.dl4j.LoraRnnOutputLayer}) that the network's own {@code fit()} trains, freezes every other
 * layer (a {@code BatchNormalization} as a {@link io.github.lora4j.dl4j.FrozenBatchNormalization}), merges the
 * adapters, unloads them to plain DL4J layers, and saves and loads them in PEFT's format.
 */
package io.github.lora4j.dl4j;
