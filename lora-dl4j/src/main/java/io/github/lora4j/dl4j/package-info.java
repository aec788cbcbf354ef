/**
 * LoRA inside DL4J networks: {@link io.github.lora4j.dl4j.LoraDl4j} turns the {@code DenseLayer}s and
 * {@code OutputLayer}s of a {@code MultiLayerNetwork} or {@code ComputationGraph} into LoRA layers
 * ({@link io.github.lora4j.dl4j.LoraDenseLayer}, {@link io.github.lora4j.dl4j.LoraOutputLayer}) that the network's own
 * {@code fit()} trains, merges them, unloads them to plain DL4J layers, and saves and loads their adapters in PEFT's
 * format.
 */
package io.github.lora4j.dl4j;
