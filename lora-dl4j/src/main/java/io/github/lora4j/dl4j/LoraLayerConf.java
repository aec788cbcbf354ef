package io.github.lora4j.dl4j;

import io.github.lora4j.LoraConfig;
import org.deeplearning4j.nn.conf.layers.FeedForwardLayer;
import org.deeplearning4j.nn.conf.layers.Layer;

/**
 * What the two LoRA layer configurations ({@link LoraDenseLayer}, {@link LoraOutputLayer}) have in common: the
 * DL4J layer they replace, the adapter settings, and whether the adapter is merged into {@code W}
 * ({@link LoraLayerState}).
 *
 * <p>Parameters (see {@link LoraParamInitializer}): {@code W [nIn, nOut]} (DL4J's f-order layout) and {@code b [nOut]},
 * frozen; with an adapter also {@code loraA [r, nIn]} and {@code loraB [nOut, r]}, trainable. Forward:
 * {@code z = x W + b + s·(x loraAᵀ) loraBᵀ}, then the base layer's activation.
 */
public interface LoraLayerConf {

    /** The LoRA part of the configuration; not null. */
    LoraLayerState getState();

    /** Whether the layer has the bias {@code b}. */
    boolean hasBias();

    /** The DL4J layer configuration this layer replaces ({@code DenseLayer} or {@code OutputLayer}). */
    default Layer base() {
        return getState().getBase();
    }

    /** The adapter settings, or null for a frozen layer without adapter (untargeted layers of a LoRA network). */
    default LoraSettings lora() {
        return getState().getLora();
    }

    /** Whether {@code W} currently holds {@code W + s·(loraB loraA)ᵀ}; saved with the configuration. */
    default boolean merged() {
        return getState().isMerged();
    }

    /** Set by {@link LoraDl4j#merge}/{@link LoraDl4j#unmerge} only. */
    default void markMerged(boolean merged) {
        getState().setMerged(merged);
    }

    /** The adapter's {@link LoraConfig}, or null without adapter. */
    default LoraConfig loraConfig() {
        return lora() == null ? null : lora().toConfig();
    }

    /** Input features {@code nIn}. */
    default long nIn() {
        return ((FeedForwardLayer) this).getNIn();
    }

    /** Output features {@code nOut}. */
    default long nOut() {
        return ((FeedForwardLayer) this).getNOut();
    }
}
