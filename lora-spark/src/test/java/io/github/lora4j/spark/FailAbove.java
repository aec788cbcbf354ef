package io.github.lora4j.spark;

import org.nd4j.common.primitives.Pair;
import org.nd4j.linalg.activations.BaseActivationFunction;
import org.nd4j.linalg.activations.impl.ActivationTanH;
import org.nd4j.linalg.api.ndarray.INDArray;

/**
 * tanh that fails when any input exceeds a threshold in magnitude: it throws (a stand-in for user code that fails
 * on one batch on a worker) or, with {@code nanGradient}, lets the forward pass through and returns a NaN gradient
 * (a stand-in for an overflow). It travels in the network's JSON like any custom activation.
 */
public class FailAbove extends BaseActivationFunction {

    private static final long serialVersionUID = 1L;

    private double threshold;
    private boolean nanGradient;

    /** For JSON. */
    public FailAbove() {
    }

    FailAbove(double threshold, boolean nanGradient) {
        this.threshold = threshold;
        this.nanGradient = nanGradient;
    }

    @Override
    public INDArray getActivation(INDArray in, boolean training) {
        double max = in.amaxNumber().doubleValue();
        if (max > threshold && !nanGradient) {
            throw new IllegalStateException("FailAbove: input " + max + " above " + threshold);
        }
        return new ActivationTanH().getActivation(in, training);
    }

    @Override
    public Pair<INDArray, INDArray> backprop(INDArray in, INDArray epsilon) {
        boolean above = in.amaxNumber().doubleValue() > threshold;
        Pair<INDArray, INDArray> g = new ActivationTanH().backprop(in, epsilon);
        if (above && nanGradient) {
            g.getFirst().assign(Double.NaN);
        }
        return g;
    }

    @Override
    public boolean equals(Object o) {
        return o instanceof FailAbove t && t.threshold == threshold && t.nanGradient == nanGradient;
    }

    @Override
    public int hashCode() {
        return Double.hashCode(threshold) * 31 + Boolean.hashCode(nanGradient);
    }

    @Override
    public String toString() {
        return "failAbove(" + threshold + (nanGradient ? ", NaN gradient)" : ")");
    }
}
