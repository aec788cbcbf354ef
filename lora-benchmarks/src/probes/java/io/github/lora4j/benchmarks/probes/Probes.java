package io.github.lora4j.benchmarks.probes;

import java.util.Arrays;

/**
 * What the probes share: the median of repeated calls timed one by one with {@link System#nanoTime}, and reading
 * their positional arguments. The median is the upper one, element {@code n / 2} of the sorted times, as every
 * probe took it when its result was committed.
 *
 * <p>The probes in this source root are one-off investigations behind the READMEs in
 * {@code lora-benchmarks/results/}: each file's header says what it shows and which result folder holds its run.
 * They print what they measure and assert nothing about time; {@code ProbesSmokeTest} runs each at a tiny shape.
 */
public final class Probes {

    private Probes() {
    }

    /**
     * Times {@code reps} calls of {@code body}, one by one.
     *
     * @param body the call to time
     * @param reps how many calls, at least 1
     * @return each call's time in nanoseconds, in call order
     */
    public static long[] times(Runnable body, int reps) {
        long[] t = new long[reps];
        for (int i = 0; i < reps; i++) {
            long t0 = System.nanoTime();
            body.run();
            t[i] = System.nanoTime() - t0;
        }
        return t;
    }

    /**
     * The median of {@code reps} calls of {@code body}.
     *
     * @param body the call to time
     * @param reps how many calls, at least 1
     * @return the median call time in milliseconds
     */
    public static double medianMs(Runnable body, int reps) {
        return medianMs(times(body, reps));
    }

    /**
     * The median of {@code reps} calls of {@code body}.
     *
     * @param body the call to time
     * @param reps how many calls, at least 1
     * @return the median call time in microseconds
     */
    public static double medianUs(Runnable body, int reps) {
        return quantile(times(body, reps), 0.5) / 1e3;
    }

    /**
     * The median of call times.
     *
     * @param nanos call times in nanoseconds (not modified)
     * @return element {@code n / 2} of the sorted times, in milliseconds
     */
    public static double medianMs(long[] nanos) {
        return quantile(nanos, 0.5) / 1e6;
    }

    /**
     * An order statistic of call times, as the probes take it: element {@code (int) (q·n)} of the sorted times.
     *
     * @param nanos call times (not modified), at least one
     * @param q     0.25 for the lower quartile, 0.5 for the median, 0.75 for the upper quartile
     * @return that element, in the unit of {@code nanos}
     */
    public static double quantile(long[] nanos, double q) {
        long[] sorted = nanos.clone();
        Arrays.sort(sorted);
        return sorted[Math.min(sorted.length - 1, (int) (q * sorted.length))];
    }

    /**
     * A probe's positional argument as a whole number of at least 1.
     *
     * @param probe    the probe's name, for the message
     * @param args     the probe's arguments
     * @param index    which one
     * @param name     what it means, for the message
     * @param fallback the value when {@code args} is shorter, or {@code null} if the argument is required
     * @return the value
     * @throws IllegalArgumentException naming the argument, what it expects and what came
     */
    public static int positive(String probe, String[] args, int index, String name, Integer fallback) {
        if (index >= args.length) {
            if (fallback == null) {
                throw new IllegalArgumentException(probe + ": argument " + (index + 1) + " (" + name
                        + ") is missing; got " + args.length + " argument(s): " + Arrays.toString(args));
            }
            return fallback;
        }
        try {
            int v = Integer.parseInt(args[index].trim());
            if (v >= 1) {
                return v;
            }
        } catch (NumberFormatException notANumber) {
            // refused below
        }
        throw new IllegalArgumentException(probe + ": argument " + (index + 1) + " (" + name
                + ") must be a whole number ≥ 1, got '" + args[index] + "'");
    }
}
