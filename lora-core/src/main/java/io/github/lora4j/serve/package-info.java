/**
 * Serving many adapters over one frozen base: {@link io.github.lora4j.serve.AdapterStore} registers thousands of
 * PEFT adapter directories by name, loads the ones a batch names into a {@link io.github.lora4j.model.LoraModel}
 * and keeps at most a memory budget of them resident, evicting the least recently used that no open batch pins.
 * Batches run concurrently through the model's mixed-adapter forward
 * ({@link io.github.lora4j.model.LoraModel#forward(String, org.nd4j.linalg.api.ndarray.INDArray, String[])}).
 */
package io.github.lora4j.serve;
