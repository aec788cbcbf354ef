/**
 * Adapter files in PEFT's format: {@code adapter_model.safetensors} plus {@code adapter_config.json}.
 *
 * <p>Entry point: {@link io.github.lora4j.io.PeftAdapterFiles} ({@code save} / {@code saver()}, {@code read},
 * {@code load}). {@link io.github.lora4j.io.PeftAdapterFiles#read read} returns everything a file holds as a
 * {@link io.github.lora4j.io.PeftAdapter}: LoRA pairs per module with their kind (linear, embedding, conv), rank,
 * alpha and shapes ({@link io.github.lora4j.io.PeftAdapterLayout}), full tensors ({@code modules_to_save}), copies of
 * base weights, the config with its raw JSON, and the safetensors metadata. Corrupt, hostile or unsupported files
 * raise {@link io.github.lora4j.io.AdapterFormatException}; a file that is valid but does not fit the model (a
 * missing module, a wrong shape, conv LoRA without a conv layer) raises {@link IllegalArgumentException}. Either
 * way nothing is changed.
 */
package io.github.lora4j.io;
