/**
 * Whole models as PEFT sees them: {@link io.github.lora4j.model.LoraModel} holds named linear modules and
 * embeddings, applies LoRA by target-module names or a regex, merges and unmerges all at once, applies PEFT's
 * {@code modules_to_save}, and saves and loads PEFT adapter directories through {@code io.github.lora4j.io}.
 *
 * <p>Weights are the caller's arrays, referenced; only merge and unmerge write them. Two modules may not share
 * weight memory (tied weights are refused when the model is built).
 */
package io.github.lora4j.model;
