/**
 * Optimisation of LoRA adapters: {@link io.github.lora4j.train.LoraTrainer} applies ND4J's own updaters (Sgd, Adam,
 * Nesterovs, RmsProp, AdaGrad, ..., with their learning-rate schedules) to {@code A} and {@code B} of the active
 * adapters only, with optional global gradient-norm clipping and decoupled (AdamW-style) weight decay. The frozen
 * weight {@code W} never gets a gradient, optimizer state or an update.
 *
 * <p>Checkpoints: {@link io.github.lora4j.train.LoraTrainer#saveState} writes the updater state, iteration and epoch
 * beside the adapter (not {@code A} and {@code B} themselves: save those at the same step), and
 * {@link io.github.lora4j.train.LoraTrainer#loadState(java.nio.file.Path, io.github.lora4j.model.LoraModel) loadState}
 * continues the run (bit for bit when the adapters have no dropout), after checking the files completely; a refused
 * file changes nothing.
 */
package io.github.lora4j.train;
