/**
 * Optimisation of LoRA adapters: {@link io.github.lora4j.train.LoraTrainer} applies ND4J's own updaters (Sgd, Adam,
 * Nesterovs, RmsProp, AdaGrad, ..., with their learning-rate schedules) to {@code A} and {@code B} of the active
 * adapters only, with optional global gradient-norm clipping and decoupled (AdamW-style) weight decay. The frozen
 * weight {@code W} never gets a gradient, optimizer state or an update.
 */
package io.github.lora4j.train;
