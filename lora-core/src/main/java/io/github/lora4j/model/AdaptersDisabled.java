package io.github.lora4j.model;

/**
 * The handle {@link LoraModel#adaptersDisabled()} returns: while it is open the model's adapters (and modules_to_save
 * copies) are off; closing it restores exactly the enabled state the call found. Closing twice does nothing more.
 *
 * <pre>{@code
 * try (AdaptersDisabled off = model.adaptersDisabled()) {
 *     INDArray base = model.forward("model.layers.0.self_attn.q_proj", x);   // the base model's output
 * }
 * }</pre>
 */
public final class AdaptersDisabled implements AutoCloseable {

    private Runnable restore;

    AdaptersDisabled(Runnable restore) {
        this.restore = restore;
    }

    /** Puts back the enabled state that {@link LoraModel#adaptersDisabled()} found. */
    @Override
    public void close() {
        if (restore != null) {
            restore.run();
            restore = null;
        }
    }
}
