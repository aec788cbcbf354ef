/**
 * Whole models as PEFT sees them: {@link io.github.lora4j.model.LoraModel} holds named linear modules and
 * embeddings, applies LoRA by target-module names or a regex, merges and unmerges all at once, applies PEFT's
 * {@code modules_to_save}, and saves and loads PEFT adapter directories through {@code io.github.lora4j.io}.
 *
 * <p>Weights are the caller's arrays, referenced; only merge, unmerge and merge-and-unload write them.
 *
 * <h2>modules_to_save</h2>
 * A module can be replaced by a fully trained copy, as PEFT's {@code modules_to_save} (classifier heads, resized
 * embeddings): {@link io.github.lora4j.model.LoraModel#load LoraModel.load} does it for the full tensors of a file,
 * {@link io.github.lora4j.model.LoraModel#setModuleToSave setModuleToSave} by hand. The copy's weight and bias are
 * new arrays; the original module and its arrays are kept untouched and come back with
 * {@code setModulesToSaveEnabled(false)} or {@code unloadModulesToSave()}. A module is either LoRA-adapted or saved
 * in full, never both.
 *
 * <h2>Tied weights</h2>
 * No two modules may share weight memory: {@code LoraModel.Builder.build()} refuses weights (and tables) whose
 * address ranges overlap, such as an {@code lm_head} tied to the input embedding, because merging an adapter into
 * one would change the other, and unmerging both would corrupt the shared array for good. Loose layers
 * ({@link io.github.lora4j.LoraLinear#wrap LoraLinear.wrap}) are not checked against each other: never wrap one
 * array in two layers that merge.
 */
package io.github.lora4j.model;
