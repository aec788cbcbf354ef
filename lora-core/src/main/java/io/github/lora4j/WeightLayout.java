package io.github.lora4j;

/**
 * How the frozen weight is stored. LoRA's {@code A [r, in]} and {@code B [out, r]} are the same either way,
 * so adapter files move between layouts unchanged.
 */
public enum WeightLayout {
    /** {@code W [out, in]}, as PyTorch's {@code nn.Linear}: {@code y = x W^T + b}. The default. */
    OUT_IN,
    /**
     * {@code W [in, out]}, as DL4J's {@code DenseLayer} and GPT-2's {@code Conv1D}: {@code y = x W + b}.
     * PEFT calls this {@code fan_in_fan_out = true}. Handled by gemm transpose flags; {@code W} is never copied.
     */
    IN_OUT
}
