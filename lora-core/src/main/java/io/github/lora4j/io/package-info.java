/**
 * Adapter files in PEFT's format: {@code adapter_model.safetensors} plus {@code adapter_config.json}.
 *
 * <p>Entry point: {@link io.github.lora4j.io.PeftAdapterFiles} ({@code save}, {@code read}, {@code load}).
 * Corrupt, hostile or unsupported files raise {@link io.github.lora4j.io.AdapterFormatException}; a file that is
 * valid but does not fit the model (a missing module, a wrong shape) raises {@link IllegalArgumentException}.
 * Either way nothing is changed.
 */
package io.github.lora4j.io;
