package io.github.lora4j.dl4j;

import io.github.lora4j.LoraConfig;
import org.deeplearning4j.nn.conf.layers.FeedForwardLayer;
import org.deeplearning4j.nn.conf.layers.Layer;

/**
 * What the LoRA layer configurations ({@link LoraDenseLayer}, {@link LoraOutputLayer}, {@link LoraRnnOutputLayer})
 * have in common: the
 * DL4J layer they replace, the adapter settings, and whether the adapter is merged into {@code W}
 * ({@link LoraLayerState}).
 *
 * <p>Parameters (see {@link LoraParamInitializer}): {@code W [nIn, nOut]} (DL4J's f-order layout) and {@code b [nOut]},
 * frozen; with an adapter also {@code loraA [r, nIn]} and {@code loraB [nOut, r]}, trainable, and for DoRA
 * {@code loraMagnitude [nOut]}. Forward: {@code z = x W + b + s·(x loraAᵀ) loraBᵀ} (DoRA:
 * {@code z = (m / ‖W + s·B·A‖) ⊙ (x W + s·(x loraAᵀ) loraBᵀ) + b}), then the base layer's activation.
 */
public interface LoraLayerConf {

    /**
     * The LoRA part of the configuration.
     *
     * @return the layer's live state (not a copy), not null
     */
    LoraLayerState getState();

    /**
     * Whether the layer has the bias {@code b}.
     *
     * @return true if the parameters include {@code b [nOut]}
     */
    boolean hasBias();

    /**
     * The DL4J layer configuration this layer replaces, as the network had it.
     *
     * @return the replaced {@code DenseLayer}, {@code OutputLayer} or {@code RnnOutputLayer} configuration (or a
     *         frozen wrapper around one), as the state holds it (not a copy)
     */
    default Layer base() {
        return getState().getBase();
    }

    /**
     * The adapter settings.
     *
     * @return the settings, or null for a frozen layer without adapter (untargeted layers of a LoRA network)
     */
    default LoraSettings lora() {
        return getState().getLora();
    }

    /**
     * Whether {@code W} currently holds {@code W + s·(loraB loraA)ᵀ}; saved with the configuration.
     *
     * @return true between {@link LoraDl4j#merge} and {@link LoraDl4j#unmerge}
     */
    default boolean merged() {
        return getState().isMerged();
    }

    /**
     * Records the merge state; called by {@link LoraDl4j#merge}/{@link LoraDl4j#unmerge} only (it moves no weights).
     *
     * @param merged whether {@code W} now holds the adapter's update
     */
    default void markMerged(boolean merged) {
        getState().setMerged(merged);
    }

    /**
     * The adapter's configuration.
     *
     * @return a new, validated {@link LoraConfig} built from {@link #lora()}, or null without adapter
     */
    default LoraConfig loraConfig() {
        return lora() == null ? null : lora().toConfig();
    }

    /**
     * Input features.
     *
     * @return {@code nIn}, the rows of {@code W}
     */
    default long nIn() {
        return ((FeedForwardLayer) this).getNIn();
    }

    /**
     * Output features.
     *
     * @return {@code nOut}, the columns of {@code W}
     */
    default long nOut() {
        return ((FeedForwardLayer) this).getNOut();
    }
}
