/**
 * LoRA layers on ND4J, following PEFT's conventions so that adapters move both ways: {@code W [out, in]} frozen,
 * {@code A [r, in]}, {@code B [out, r]}, scaling {@code s = alpha / r} ({@code alpha / sqrt(r)} with rsLoRA), and
 * {@code y = x W^T + b + s·(dropout(x) A^T) B^T}.
 *
 * <ul>
 *   <li>{@link io.github.lora4j.LoraLinear}: a linear layer with named adapters: forward, backward (no gradient for
 *       {@code W}), mixed-adapter batches, weighted combinations, and merge / unmerge in place
 *       ({@link io.github.lora4j.MergeMode#EXACT exact} by default: unmerge restores {@code W} bit for bit).
 *       {@link io.github.lora4j.WeightLayout#IN_OUT} serves weights stored {@code [in, out]} (PEFT's
 *       {@code fan_in_fan_out}) without copying them.</li>
 *   <li>{@link io.github.lora4j.LoraEmbedding} (PEFT's {@code lora.Embedding}) and
 *       {@link io.github.lora4j.LoraConv2d} (PEFT's {@code lora.Conv2d}, inference and merging) on the same
 *       machinery.</li>
 *   <li>{@link io.github.lora4j.LoraConfig}: an adapter's immutable, validated configuration (rank, alpha,
 *       dropout, rsLoRA, {@link io.github.lora4j.LoraInit init}, seed); {@link io.github.lora4j.LoraAdapter}: one
 *       adapter's live {@code A}, {@code B} and gradients.</li>
 *   <li>{@link io.github.lora4j.LoraMath}: parameter counts and savings of full fine-tuning against LoRA.</li>
 * </ul>
 *
 * <p>Who may change what: the layers reference the caller's weights and write them only in merge and unmerge;
 * {@code A} and {@code B} change through {@code setAdapterWeights} and {@code updateTrainable}, refused while merged.
 * Bad arguments raise an exception naming what was expected and what came, and leave the layer as it was.
 *
 * <p>Threading: eval-mode forward may run on many threads; every state change takes the layer's exclusive lock, so
 * a forward never sees a half-merged weight. Training (forward then backward) belongs on one thread.
 *
 * <p>Related packages: {@code io.github.lora4j.model} (whole models, PEFT's target modules), {@code .io} (PEFT
 * adapter files), {@code .train} (optimizer steps and checkpoints), {@code .samediff} (LoRA in SameDiff graphs).
 */
package io.github.lora4j;
